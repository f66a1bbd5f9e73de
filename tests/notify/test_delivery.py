"""Webhook delivery against real HTTP receivers on loopback: signatures, retries, Retry-After."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
from aiohttp import web

from streams.notify.delivery import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    DeliveryPolicy,
    deliver,
    retry_after_seconds,
    signature,
    verify_signature,
)
from tests.harness import free_port

SECRET = b"receiver-secret"
BODY = b'{"alerts":[{"alert_id":"fp-1"}]}'
FAST = DeliveryPolicy(timeout_s=1.0, max_attempts=5, initial_backoff_s=0.05, max_backoff_s=0.2)


@dataclass
class Seen:
    at: float
    headers: dict[str, str]
    body: bytes


@dataclass
class Script:
    """What a receiver answers, request by request (the last answer repeats)."""

    answers: list[tuple[int, dict[str, str]] | str]
    seen: list[Seen] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append(Seen(time.monotonic(), dict(request.headers), body))
        answer = self.answers[min(len(self.seen), len(self.answers)) - 1]
        if answer == "hang":
            await asyncio.sleep(3600)
        assert not isinstance(answer, str)
        status, headers = answer
        return web.Response(status=status, headers=headers, text="nope" if status >= 400 else "ok")


@asynccontextmanager
async def serve(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]], path: str = "/hook"
) -> AsyncIterator[str]:
    """A loopback HTTP server answering POSTs to ``path`` with ``handler``; yields its URL."""
    app = web.Application()
    app.router.add_post(path, handler)
    runner = web.AppRunner(app, shutdown_timeout=0.2)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}{path}"
    finally:
        await runner.cleanup()


def receiver(script: Script) -> AbstractAsyncContextManager[str]:
    return serve(script.handle)


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


async def send(url: str, policy: DeliveryPolicy = FAST, **kw: object) -> object:
    async with httpx.AsyncClient() as client:
        return await deliver(
            client,
            url,
            BODY,
            "application/json",
            secret=SECRET,
            idempotency_key="n-123",
            policy=policy,
            **kw,  # type: ignore[arg-type]
        )


def test_a_receiver_verifies_the_signature_and_refuses_tampering_or_replay() -> None:
    header = signature(SECRET, 1_700_000_000, BODY)
    assert verify_signature(SECRET, header, BODY, now=1_700_000_100)
    assert not verify_signature(SECRET, header, BODY + b" ", now=1_700_000_100)
    assert not verify_signature(b"other", header, BODY, now=1_700_000_100)
    assert not verify_signature(SECRET, header, BODY, now=1_700_000_000 + 301)
    assert not verify_signature(SECRET, None, BODY, now=1_700_000_000)
    assert not verify_signature(SECRET, "t=x,v1=00", BODY, now=1_700_000_000)


def test_a_2xx_is_delivered_once_signed_with_the_idempotency_key() -> None:
    script = Script([(204, {})])

    async def scenario() -> object:
        async with receiver(script) as url:
            return await send(url)

    result = run(scenario())
    assert (result.outcome, result.attempts, result.status_code) == ("delivered", 1, 204)  # type: ignore[attr-defined]
    (seen,) = script.seen
    assert seen.body == BODY
    assert seen.headers[IDEMPOTENCY_HEADER] == "n-123"
    assert seen.headers["Content-Type"] == "application/json"
    assert verify_signature(SECRET, seen.headers[SIGNATURE_HEADER], seen.body, now=time.time())


def test_a_500_then_200_is_retried_after_a_backoff_with_the_same_key() -> None:
    script = Script([(500, {}), (500, {}), (200, {})])

    async def scenario() -> object:
        async with receiver(script) as url:
            return await send(url)

    result = run(scenario())
    assert (result.outcome, result.attempts, result.status_code) == ("delivered", 3, 200)  # type: ignore[attr-defined]
    assert {s.headers[IDEMPOTENCY_HEADER] for s in script.seen} == {"n-123"}
    gaps = [b.at - a.at for a, b in zip(script.seen, script.seen[1:], strict=False)]
    assert all(g >= FAST.initial_backoff_s * 0.9 for g in gaps), gaps
    # each attempt is signed afresh and verifies
    assert all(
        verify_signature(SECRET, s.headers[SIGNATURE_HEADER], s.body, now=time.time())
        for s in script.seen
    )


def test_429_with_retry_after_waits_exactly_as_asked() -> None:
    script = Script([(429, {"Retry-After": "2"}), (503, {"Retry-After": "1"}), (200, {})])
    waits: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waits.append(seconds)

    async def scenario() -> object:
        async with receiver(script) as url:
            return await send(url, sleep=fake_sleep)

    result = run(scenario())
    assert (result.outcome, result.attempts) == ("delivered", 3)  # type: ignore[attr-defined]
    assert waits == [2.0, 1.0]


def test_retry_after_may_be_an_http_date_and_is_capped() -> None:
    now = datetime(2027, 1, 15, 8, 0, tzinfo=UTC).timestamp()
    assert retry_after_seconds("120", now) == 120.0
    assert retry_after_seconds("Fri, 15 Jan 2027 08:00:30 GMT", now) == 30.0
    assert retry_after_seconds("Fri, 15 Jan 2027 07:00:00 GMT", now) == 0.0
    assert retry_after_seconds("soon", now) is None
    assert retry_after_seconds(None, now) is None
    script = Script([(429, {"Retry-After": "86400"}), (200, {})])
    waits: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waits.append(seconds)

    async def scenario() -> object:
        async with receiver(script) as url:
            return await send(url, DeliveryPolicy(max_retry_after_s=30.0), sleep=fake_sleep)

    run(scenario())
    assert waits == [30.0]


def test_a_4xx_other_than_408_425_429_is_dead_at_once_with_the_answer() -> None:
    script = Script([(400, {})])

    async def scenario() -> object:
        async with receiver(script) as url:
            return await send(url)

    result = run(scenario())
    assert (result.outcome, result.attempts, result.status_code) == ("dead", 1, 400)  # type: ignore[attr-defined]
    assert result.error == "HTTP 400: nope"  # type: ignore[attr-defined]


def test_a_receiver_that_never_recovers_is_dead_after_max_attempts_with_the_last_error() -> None:
    script = Script([(503, {})])

    async def scenario() -> object:
        async with receiver(script) as url:
            return await send(url)

    result = run(scenario())
    assert (result.outcome, result.attempts) == ("dead", FAST.max_attempts)  # type: ignore[attr-defined]
    assert result.error == "HTTP 503: nope"  # type: ignore[attr-defined]
    assert len(script.seen) == FAST.max_attempts


def test_a_hanging_receiver_times_out_and_is_retried() -> None:
    script = Script(["hang", (200, {})])

    async def scenario() -> object:
        async with receiver(script) as url:
            return await send(url, DeliveryPolicy(timeout_s=0.3, initial_backoff_s=0.05))

    result = run(scenario())
    assert (result.outcome, result.attempts) == ("delivered", 2)  # type: ignore[attr-defined]
    assert 0.3 <= result.seconds < 5  # type: ignore[attr-defined]


def test_a_receiver_down_then_back_gets_it_once_it_listens() -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    script = Script([(200, {})])

    async def scenario() -> object:
        async def come_back_later() -> None:
            await asyncio.sleep(0.6)
            app = web.Application()
            app.router.add_post("/hook", script.handle)
            runner = web.AppRunner(app)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            await asyncio.sleep(3)
            await runner.cleanup()

        task = asyncio.create_task(come_back_later())
        policy = DeliveryPolicy(max_attempts=20, initial_backoff_s=0.1, max_backoff_s=0.3)
        result = await send(url, policy)
        task.cancel()
        return result

    result = run(scenario())
    assert result.outcome == "delivered" and result.attempts > 1  # type: ignore[attr-defined]
    assert len(script.seen) == 1  # refused connections never reached it


def test_the_example_receiver_accepts_signed_deliveries_once_and_refuses_forgeries() -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    port = free_port()
    example = Path(__file__).parents[2] / "examples" / "receiver.py"
    proc = subprocess.Popen(
        [sys.executable, str(example), "--port", str(port)],
        env={**os.environ, "CITYVITALS_WEBHOOK_SECRET": SECRET.decode()},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("listening on")
        url = f"http://127.0.0.1:{port}/"
        first = run(send(url))
        again = run(send(url))  # the same idempotency key: acknowledged, not acted on
        assert (first.outcome, first.status_code) == ("delivered", 204)  # type: ignore[attr-defined]
        assert (again.outcome, again.status_code) == ("delivered", 200)  # type: ignore[attr-defined]
        forged = httpx.post(
            url,
            content=BODY,
            headers={SIGNATURE_HEADER: signature(b"guess", int(time.time()), BODY)},
        )
        assert forged.status_code == 401
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    assert out.splitlines() == ["notification n-123: ? (32 bytes)"]


# --- chat robots --------------------------------------------------------------------------


@dataclass
class Robot:
    """A DingTalk/WeCom-style robot: HTTP 200 always, ``errcode`` says what happened.

    With a ``secret`` it checks DingTalk's 加签 the way DingTalk documents it:
    ``sign`` = base64(HMAC-SHA256(secret, "<timestamp>\\n<secret>")), timestamp in ms
    within an hour."""

    errcodes: list[int]  # answer per request (the last repeats), unless the signature fails
    secret: bytes | None = None
    seen: list[dict[str, str]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        import base64
        import hashlib
        import hmac

        await request.read()
        query = dict(request.query)
        self.seen.append(query)
        if self.secret is not None:
            stamp = query.get("timestamp", "")
            expected = base64.b64encode(
                hmac.new(self.secret, f"{stamp}\n".encode() + self.secret, hashlib.sha256).digest()
            ).decode()
            fresh = stamp.isdigit() and abs(time.time() * 1000 - int(stamp)) < 3_600_000
            if not fresh or query.get("sign") != expected:
                return web.json_response({"errcode": 310000, "errmsg": "sign not match"})
        code = self.errcodes[min(len(self.seen), len(self.errcodes)) - 1]
        return web.json_response({"errcode": code, "errmsg": "ok" if code == 0 else "refused"})


def robot(r: Robot) -> AbstractAsyncContextManager[str]:
    return serve(r.handle, "/robot/send")


def robot_send(r: Robot, dialect: str) -> object:
    async def scenario() -> object:
        async with robot(r) as url:
            return await send(url + "?access_token=abc", dialect=dialect)

    return run(scenario())


def test_dingtalk_is_signed_its_own_way_afresh_on_every_attempt() -> None:
    r = Robot([130101, 0], secret=SECRET)  # "send too fast", then taken
    result = robot_send(r, "dingtalk")
    assert (result.outcome, result.attempts, result.status_code) == ("delivered", 2, 200)  # type: ignore[attr-defined]
    assert [q["access_token"] for q in r.seen] == ["abc", "abc"]  # the robot's own key is kept
    assert r.seen[0]["timestamp"] != r.seen[1]["timestamp"]  # signed again for the retry


def test_dingtalk_refusing_the_signature_is_dead_at_once_with_its_message() -> None:
    r = Robot([0], secret=b"the-robot-has-another-secret")
    result = robot_send(r, "dingtalk")
    assert (result.outcome, result.attempts) == ("dead", 1)  # type: ignore[attr-defined]
    assert result.error == "HTTP 200, dingtalk errcode 310000: sign not match"  # type: ignore[attr-defined]


def test_wecom_rate_limits_are_retried_and_other_errcodes_are_dead() -> None:
    limited = robot_send(Robot([45009, 45009, 0]), "wecom")
    assert (limited.outcome, limited.attempts) == ("delivered", 3)  # type: ignore[attr-defined]
    refused = robot_send(Robot([93000]), "wecom")  # "invalid webhook url"
    assert (refused.outcome, refused.attempts) == ("dead", 1)  # type: ignore[attr-defined]
    assert "errcode 93000" in refused.error  # type: ignore[attr-defined]


def test_a_plain_webhook_answering_json_with_errcode_is_delivered() -> None:
    """Only chat robots speak errcode; an ordinary 2xx is delivered whatever it says."""
    r = Robot([93000])
    result = robot_send(r, "webhook")
    assert (result.outcome, result.attempts) == ("delivered", 1)  # type: ignore[attr-defined]
    assert "sign" not in r.seen[0]
