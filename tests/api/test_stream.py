"""The live stream's bound per client, without a broker: a client that falls behind is cut
off with a reason, costs the worker no more than its bound, and resumes where it stopped."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import h11
import httpx
import orjson
import pytest
import uvicorn

from streams.alerting.tail import Tail
from streams.api.alerts import events
from streams.api.app import create_api
from streams.api.store import AlertFilter, AlertStore, parse_cursor
from streams.core import metrics
from streams.core.messages import AlertEvent
from tests.api.test_api import BOOK, CFG, TOKENS, Recorder
from tests.api.test_auth import alert

OPERATOR = BOOK.principal("cc.duty")
DISTRICTS = ("339901", "339902")


def numbered(n: int) -> AlertEvent:
    """The n-th alert of a run, in one of two districts by turn."""
    district = DISTRICTS[n % 2]
    return alert(alert_id=f"n{n:05d}-1", fingerprint=f"n{n:05d}", district=district, street=None)


def overflows() -> float:
    return metrics.REGISTRY.get_sample_value("cityvitals_api_stream_overflows_total") or 0.0


def parse_sse(text: str) -> list[tuple[str, str, str]]:
    """(event type, id, data) of every event in a Server-Sent Events text."""
    out = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            name, _, value = line.partition(": ")
            if name in ("id", "event", "data"):
                fields[name] = value
        if "data" in fields:
            out.append((fields.get("event", "message"), fields.get("id", ""), fields["data"]))
    return out


async def never_gone() -> bool:
    return False


async def gone() -> bool:
    return True


async def take(stream: AsyncIterator[bytes]) -> tuple[str, str, str]:
    """The next event of a stream, skipping comments."""
    while True:
        found = parse_sse((await anext(stream)).decode())
        if found:
            return found[0]


def test_a_client_that_stops_reading_is_cut_off_while_others_keep_receiving() -> None:
    """It is told why, costs no more than its bound meanwhile, and resumes exactly."""

    async def scenario() -> None:
        store = AlertStore(partitions=2, stream_queue=5)
        log: list[AlertEvent] = []

        def publish(n: int) -> None:
            log.append(numbered(n))
            store.add_alert(n % 2, n // 2, log[-1])

        before = overflows()
        own_district = AlertFilter(district=DISTRICTS[0])
        slow = events(store, OPERATOR, own_district, dict(store.positions), never_gone)
        fast = events(store, OPERATOR, AlertFilter(), dict(store.positions), never_gone)
        assert await anext(slow) == b": connected\n\n"
        assert await anext(fast) == b": connected\n\n"
        publish(0)
        publish(1)
        publish(2)
        kind, _, data = await take(slow)  # the slow client reads one, then stops
        assert (kind, AlertEvent.model_validate_json(data)) == ("alert", log[0])
        received = [AlertEvent.model_validate_json((await take(fast))[2]) for _ in range(3)]

        for n in range(3, 200):
            publish(n)
            # the worker holds at most the bound for the slow client, whatever it misses
            assert max(store.waiting()) <= 5
            received.append(AlertEvent.model_validate_json((await take(fast))[2]))
        assert received == log, "the client that keeps up misses nothing"
        assert overflows() == before + 1
        assert len(store.waiting()) == 1, "the slow client's events are no longer kept"

        # when it reads again: what it had in hand, then why it is cut off, then the end
        told = parse_sse(b"".join([chunk async for chunk in slow]).decode())
        assert told[-1][0] == "overflow", told
        _, resume, data = told[-1]
        reason = orjson.loads(data)
        assert reason["reason"] == "fell_behind" and reason["resume"] == resume
        assert "Last-Event-ID" in reason["detail"]
        given = [AlertEvent.model_validate_json(d) for k, _, d in told if k == "alert"]

        # resumed from that id: exactly what it missed, in order, nothing twice
        again = events(store, OPERATOR, own_district, parse_cursor(resume, 2), gone)
        rest = [
            AlertEvent.model_validate_json(d)
            for k, _, d in parse_sse(b"".join([c async for c in again]).decode())
            if k == "alert"
        ]
        assert [log[0], *given, *rest] == [e for e in log if e.district == DISTRICTS[0]]
        assert len(rest) > 50

    asyncio.run(scenario())


class Served:
    """The API over a real socket, in a thread of its own, on a store this test feeds."""

    def __init__(self, store: AlertStore) -> None:
        api = create_api(store, BOOK, CFG, Recorder(), ready=lambda: True)
        self.store = store
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(
            api, log_level="warning", lifespan="off", access_log=False, timeout_graceful_shutdown=5
        )
        self.server = uvicorn.Server(config)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.loop.run_until_complete(self.server.serve(sockets=[self.sock]))

    def call(self, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` in the server's event loop, as the worker's store feed runs."""

        async def inside() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(inside(), self.loop).result(30)

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = 300
        while not self.server.started and deadline:
            threading.Event().wait(0.1)
            deadline -= 1
        assert self.server.started
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture
def served() -> Iterator[Served]:
    with Served(AlertStore(partitions=1, stream_queue=50)) as s:
        yield s


def wait_until(predicate: Any, what: str, timeout: float = 60.0) -> None:
    pause = threading.Event()
    for _ in range(int(timeout / 0.05)):
        if predicate():
            return
        pause.wait(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_stalled_connection_is_cut_off_at_its_bound_and_resumes_from_its_last_event_id(
    served: Served,
) -> None:
    headers = {"Authorization": f"Bearer {TOKENS['cc.duty']}"}
    # a client that connects and never reads, with the smallest receive buffer
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(served.sock.getsockname())
    conn = h11.Connection(h11.CLIENT)
    host = served.url.removeprefix("http://")
    stalled.sendall(
        conn.send(
            h11.Request(
                method="GET",
                target="/api/v1/stream",
                headers=[("Host", host), *headers.items()],
            )
        )
    )
    received: list[AlertEvent] = []
    done = threading.Event()

    def keep_reading() -> None:
        with httpx.stream(
            "GET", f"{served.url}/api/v1/stream", headers=headers, timeout=60
        ) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    received.append(AlertEvent.model_validate_json(line[6:]))
                if done.is_set():
                    return

    reader = threading.Thread(target=keep_reading, daemon=True)
    reader.start()
    wait_until(lambda: len(served.call(served.store.waiting)) == 2, "both clients listening")

    before = overflows()
    log: list[AlertEvent] = []
    note = "x" * 2000  # big events fill the stalled connection's buffers sooner
    while overflows() == before:
        assert len(log) < 20_000, "the stalled client was never cut off"
        batch = [
            numbered(n).model_copy(update={"headline_en": note})
            for n in range(len(log), len(log) + 40)
        ]
        for event in batch:
            log.append(event)
            served.call(served.store.add_alert, 0, len(log) - 1, event)
        assert max(served.call(served.store.waiting)) <= 50
        wait_until(lambda: len(received) == len(log), "the reading client to keep up")
    assert overflows() == before + 1
    assert len(served.call(served.store.waiting)) == 1
    for n in range(len(log), len(log) + 10):  # the reading client is not disturbed
        log.append(numbered(n))
        served.call(served.store.add_alert, 0, n, log[-1])
    wait_until(lambda: len(received) == len(log), "the reading client's last events")
    assert received == log
    print(f"the stalled client was cut off after {len(log) - 10} events of 2 kB")
    done.set()
    served.call(served.store.add_alert, 0, len(log), numbered(len(log)))
    reader.join(30)

    # the stalled client reads at last: what was sent before, then why it was cut off
    text = b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(stalled.recv(65536))
        elif isinstance(event, h11.Data):
            text += bytes(event.data)
        elif isinstance(event, h11.EndOfMessage):
            break
    stalled.close()
    told = parse_sse(text.decode())
    given = [AlertEvent.model_validate_json(d) for k, _, d in told if k == "alert"]
    assert told[-1][0] == "overflow" and orjson.loads(told[-1][2])["reason"] == "fell_behind"
    resume = told[-1][1]
    assert given == log[: len(given)] and len(given) < len(log)

    # and resumes: exactly the rest, in order
    rest: list[AlertEvent] = []
    with httpx.stream(
        "GET",
        f"{served.url}/api/v1/stream",
        headers={**headers, "Last-Event-ID": resume},
        timeout=60,
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                rest.append(AlertEvent.model_validate_json(line[6:]))
                if len(given) + len(rest) >= len(log):
                    break
    assert given + rest == log


def test_the_terminal_feed_resumes_at_once_from_the_id_an_overflow_gives(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, second = numbered(0), numbered(1)
    answers = [
        [
            *("id: v1.1", "event: alert", f"data: {first.to_json().decode()}", ""),
            *("id: v1.5", "event: overflow", 'data: {"reason": "fell_behind"}', ""),
        ],
        ["id: v1.6", "event: alert", f"data: {second.to_json().decode()}", ""],
    ]
    asked: list[str | None] = []

    class Answer:
        status_code = 200

        def __init__(self, lines: list[str]) -> None:
            self.lines = lines

        def __enter__(self) -> Answer:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def iter_lines(self) -> Iterator[str]:
            return iter(self.lines)

    def stream(method: str, url: str, *, headers: dict[str, str], **kw: Any) -> Answer:
        asked.append(headers.get("Last-Event-ID"))
        return Answer(answers[len(asked) - 1])

    monkeypatch.setattr(httpx, "stream", stream)
    feed = Tail("http://api", "token").events()
    assert [next(feed), next(feed)] == [first, second]
    assert asked == [None, "v1.5"]
