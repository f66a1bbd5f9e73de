"""Responder notifications on the real broker, to real HTTP receivers on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web

from streams.api.auth import write_roles_with_tokens
from streams.core.config import DEFAULT_CONFIG_DIR, load_config
from streams.notify.delivery import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, verify_signature
from streams.sim.simulator import SimEvent
from tests.harness import (
    ApiWorker,
    Worker,
    free_port,
    produce,
    read_topic,
    run,
    street_fire,
    wait_for,
)

pytestmark = pytest.mark.broker
SECRET = "loopback-receiver-signing-secret-0123456789"  # 32 bytes or more, as the worker needs
CFG = load_config()


@dataclass
class Hit:
    path: str
    at: float
    key: str
    signed: bool
    body: dict[str, Any]


@dataclass
class Request:
    path: str
    at: float
    key: str
    answer: int | str


@dataclass
class Receivers:
    """Webhook receivers in a thread of their own.

    ``down_until[path]`` answers 503 until then; ``script[path]`` gives the
    answer to each request in turn (the last one repeats): a status code, a
    ``(status, headers)`` pair, or ``"hang"`` (no answer for 60 s)."""

    port: int = field(default_factory=free_port)
    hits: list[Hit] = field(default_factory=list)
    down_until: dict[str, float] = field(default_factory=dict)
    answers: dict[str, int] = field(default_factory=dict)  # every request, by path
    script: dict[str, list[int | tuple[int, dict[str, str]] | str]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None
    _runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    async def _handle(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        body = await request.read()
        n = self.answers[path] = self.answers.get(path, 0) + 1
        key = request.headers.get(IDEMPOTENCY_HEADER, "")
        if time.time() < self.down_until.get(path, 0):
            return web.Response(status=503, text="down")
        if path in self.script:
            answer = self.script[path][min(n, len(self.script[path])) - 1]
            status, headers = answer if isinstance(answer, tuple) else (answer, {})
            self.requests.append(Request(path, time.time(), key, status))
            if status == "hang":
                await asyncio.sleep(60)
            if isinstance(status, int) and status >= 300:
                return web.Response(status=status, headers=headers, text="not now")
        self.hits.append(
            Hit(
                path,
                time.time(),
                request.headers.get(IDEMPOTENCY_HEADER, ""),
                verify_signature(
                    SECRET.encode(), request.headers.get(SIGNATURE_HEADER), body, now=time.time()
                ),
                orjson.loads(body),
            )
        )
        return web.Response(status=204)

    def start(self) -> None:
        ready = threading.Event()

        def serve() -> None:
            loop = self._loop = asyncio.new_event_loop()
            app = web.Application()
            app.router.add_post("/{path}", self._handle)
            runner = self._runner = web.AppRunner(app, shutdown_timeout=0.2)
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
            ready.set()
            loop.run_forever()

        threading.Thread(target=serve, daemon=True).start()
        ready.wait(10)

    def stop(self) -> None:
        if self._loop is not None and self._runner is not None:
            # close connections and cancel hanging handlers before the loop stops
            done = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
            with contextlib.suppress(Exception):
                done.result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)

    def at(self, path: str) -> list[Hit]:
        return [h for h in self.hits if h.path == path]


LEVELS = ("street-duty", "district-duty", "city-command")
LINK_KEY = "loopback-responder-link-key-0123456789"


def routes_yaml(r: Receivers, deadline: str, fan_out: Sequence[str] = ()) -> str:
    """Every alert to ``ops``; with ``fan_out``, to each of those receivers as well."""
    receivers = "\n".join(
        f"  - name: {name}\n    url: {r.url(name)}\n    format: native\n    secret: {SECRET}"
        for name in ("ops", *LEVELS, *fan_out)
    )
    children = "".join(
        f"    - {{name: {name}, receiver: {name}, continue: true}}\n" for name in fan_out
    )
    if fan_out:
        children = "  routes:\n" + children + "    - {name: ops, receiver: ops}\n"
    return f"""version: 1
console_url: http://127.0.0.1:6066
responder_links: {{ttl: 1h, key: {LINK_KEY}}}
receivers:
{receivers}
route:
  receiver: ops
  group_by: [district]
  group_wait: 1s
  group_interval: 2s
  repeat_interval: 1h
  send_resolved: true
{children}escalation:
  ack_deadlines: {{I: {deadline}, II: {deadline}, III: {deadline}, IV: {deadline}}}
  levels:
    street: street-duty
    district: district-duty
    city: city-command
"""


@pytest.fixture
def receivers() -> Iterator[Receivers]:
    r = Receivers()
    r.start()
    yield r
    r.stop()


def notify_worker(
    broker_bootstrap: str,
    tmp_path: Path,
    receivers: Receivers,
    deadline: str,
    fan_out: Sequence[str] = (),
) -> ApiWorker:
    routes = tmp_path / "routes.yaml"
    routes.write_text(routes_yaml(receivers, deadline, fan_out), encoding="utf-8")
    roles = tmp_path / "roles.yaml"
    tokens = write_roles_with_tokens(DEFAULT_CONFIG_DIR / "roles.yaml", roles)
    w = Worker(
        broker_bootstrap,
        tmp_path,
        env={
            "CITYVITALS_ROLES_FILE": str(roles),
            "CITYVITALS_ROUTES_FILE": str(routes),
            "CITYVITALS_NOTIFY_MAX_BACKOFF_S": "1",
            "CITYVITALS_NOTIFY_TIMEOUT_S": "2",
            "CITYVITALS_NOTIFY_MAX_ATTEMPTS": "500",
        },
    )
    return ApiWorker(w.start(), tokens)


def alarm_ids(hits: list[Hit]) -> set[str]:
    return {a["alert_id"] for h in hits for a in h.body["alerts"] if a["kind"] == "alarm"}


def red_street_alarms(hits: list[Hit]) -> set[str]:
    return {
        a["alert_id"]
        for h in hits
        for a in h.body["alerts"]
        if a["kind"] == "alarm" and a.get("street") == "339901001" and a["grade"] == 1
    }


def produce_street_fire(api: ApiWorker) -> None:
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=2)
    events = street_fire(start, range(0, 10), 25) + street_fire(start, range(10, 16), 200)
    run(produce(api.bootstrap, events))


def test_an_unacknowledged_alarm_is_notified_then_escalates_street_district_city(
    broker_bootstrap: str, tmp_path: Path, receivers: Receivers, fresh_topics: None
) -> None:
    api = notify_worker(broker_bootstrap, tmp_path, receivers, deadline="4s")
    try:
        produce_street_fire(api)
        wait_for(
            lambda: red_street_alarms(receivers.at("ops")), 120, "the red street alarm notified"
        )
        (alert_id,) = red_street_alarms(receivers.at("ops"))
        first = min(h.at for h in receivers.at("ops") if alert_id in alarm_ids([h]))
        wait_for(
            lambda: alert_id in alarm_ids(receivers.at("city-command")),
            60,
            "escalation to the city",
        )
        to_district = min(h.at for h in receivers.at("district-duty") if alert_id in alarm_ids([h]))
        to_city = min(h.at for h in receivers.at("city-command") if alert_id in alarm_ids([h]))
        # the deadline is 4 s per level, counted from when the notifier saw the alert; the
        # first notification left group_wait (1 s) plus up to one 1 s timer tick after that,
        # so the district is notified at least 4 - 1 - 1 s after it, less delivery jitter
        assert 1.5 <= to_district - first <= 15.0, to_district - first
        assert 3.0 <= to_city - to_district <= 15.0, to_city - to_district
        assert alert_id not in alarm_ids(receivers.at("street-duty"))  # it started at street level
        for hit in receivers.hits:
            assert hit.signed and len(hit.key) == 32
        # each escalation is on the alert's timeline
        wait_for(
            lambda: (
                [
                    a["note"].split("escalated to ")[1].split(" ")[0]
                    for a in api.get(f"/api/v1/alerts/{alert_id}").json()["alert"]["actions"]
                    if a["action"] == "escalate"
                ]
                == ["district", "city"]
            ),
            30,
            "both escalations on the timeline",
        )
        escalations = [
            a
            for a in api.get(f"/api/v1/alerts/{alert_id}").json()["alert"]["actions"]
            if a["action"] == "escalate"
        ]
        assert {(a["actor"], a["role"]) for a in escalations} == {("notifier", "system")}
    finally:
        api.worker.stop(signal.SIGKILL)


def test_acknowledging_through_the_responder_link_stops_the_escalation(
    broker_bootstrap: str, tmp_path: Path, receivers: Receivers, fresh_topics: None
) -> None:
    api = notify_worker(broker_bootstrap, tmp_path, receivers, deadline="10s")
    try:
        produce_street_fire(api)
        wait_for(lambda: red_street_alarms(receivers.at("ops")), 120, "the alarm notified to ops")
        # the responder acknowledges with the signed link in the notification, no account needed
        links: dict[str, str] = {}
        for hit in receivers.at("ops"):
            links.update(hit.body["respond_links"])
        assert alarm_ids(receivers.at("ops")) <= set(links)
        base = f"http://127.0.0.1:{api.worker.web_port}"
        for alert_id in alarm_ids(receivers.at("ops")):
            assert links[alert_id].startswith("http://127.0.0.1:6066/respond/r1.")
            path = links[alert_id].removeprefix("http://127.0.0.1:6066")
            page = httpx.get(base + path, timeout=10)
            assert page.status_code == 200 and "respond.js" in page.text
            shown = httpx.get(base + "/api/v1" + path, timeout=10).json()
            assert shown["alert"]["alert_id"] == alert_id
            r = httpx.post(
                base + "/api/v1" + path,
                json={"action": "acknowledge", "responder": "Engine 7"},
                timeout=10,
            )
            assert r.status_code == 202, r.text
        (alert_id,) = red_street_alarms(receivers.at("ops"))
        wait_for(
            lambda: (
                [
                    (a["action"], a["actor"], a["role"])
                    for a in api.get(f"/api/v1/alerts/{alert_id}").json()["alert"]["actions"]
                ]
                == [("acknowledge", "link:ops/Engine 7", "responder")]
            ),
            30,
            "the acknowledgement on the alert's timeline",
        )
        # an alarm nobody acknowledges, seen after the acknowledgement on the same
        # partition: once it has escalated, the acknowledged alarm's own deadline (10 s,
        # which began earlier) has passed and been looked at by the same timers
        at = datetime.now(UTC)
        marker = SimEvent("city.emergency-command", b"339901", storm_alert(0, at), at)
        run(produce(api.bootstrap, [marker]))

        def escalated() -> set[str]:
            return alarm_ids(receivers.at("district-duty")) | alarm_ids(
                receivers.at("city-command")
            )

        wait_for(lambda: escalated(), 60, "the unacknowledged alarm escalated")
        assert escalated() == {"storm-00000"}
    finally:
        api.worker.stop(signal.SIGKILL)


def test_failing_limited_and_hanging_receivers_get_their_waits_and_delay_no_other(
    broker_bootstrap: str, tmp_path: Path, receivers: Receivers, fresh_topics: None
) -> None:
    from streams.core.messages import OUTBOX_TOPIC, Notification

    receivers.script = {
        "flaky": [500, 204],
        "limited": [(429, {"Retry-After": "3"}), 204],
        "hang": ["hang"],
    }
    api = notify_worker(
        broker_bootstrap, tmp_path, receivers, "1h", fan_out=("flaky", "limited", "hang")
    )
    try:
        # one alert in each of six districts: six groups, six notifications per receiver,
        # more than the hanging receiver's senders can hold at once
        at = datetime.now(UTC)
        districts = sorted(CFG.districts)[:6]
        run(
            produce(
                api.bootstrap,
                [
                    SimEvent("city.emergency-command", d.encode(), storm_alert(n, at, d), at)
                    for n, d in enumerate(districts)
                ],
            )
        )
        wait_for(
            lambda: receivers.at("flaky") and receivers.at("limited") and receivers.at("ops"),
            60,
            "deliveries to flaky, limited and ops",
        )

        def tries(path: str) -> list[Request]:
            first = next(r.key for r in receivers.requests if r.path == path)
            return [r for r in receivers.requests if r.path == path and r.key == first]

        wait_for(lambda: len(tries("flaky")) >= 2 and len(tries("limited")) >= 2, 30, "retries")
        flaky, limited = tries("flaky"), tries("limited")
        assert [r.answer for r in flaky[:2]] == [500, 204]
        assert [r.answer for r in limited[:2]] == [429, 204]
        flaky_wait = flaky[1].at - flaky[0].at
        limited_wait = limited[1].at - limited[0].at
        assert 0.9 <= flaky_wait <= 3.0, flaky_wait  # backoff: 1 s (the test's maximum)
        assert 2.9 <= limited_wait <= 4.5, limited_wait  # Retry-After: 3
        assert {h.key for h in receivers.at("flaky")} >= {flaky[0].key}
        assert {h.key for h in receivers.at("limited")} >= {limited[0].key}

        # every notification planned for ops arrives promptly while "hang" never answers
        def planned(receiver: str) -> dict[str, datetime]:
            notes = [
                Notification.model_validate_json(v)
                for v in run(read_topic(api.bootstrap, OUTBOX_TOPIC, idle_s=1))
            ]
            return {n.notification_id: n.created_at for n in notes if n.receiver == receiver}

        wait_for(
            lambda: (
                len(planned("ops")) == 6
                and set(planned("ops")) <= {h.key for h in receivers.at("ops")}
            ),
            60,
            "every ops notification delivered",
        )
        assert len(planned("hang")) == 6
        assert (
            len({r.key for r in receivers.requests if r.path == "hang"}) >= 4
        )  # all senders stuck
        assert receivers.at("hang") == []
        created = planned("ops")
        latency = sorted(
            h.at - created[h.key].timestamp() for h in receivers.at("ops") if h.key in created
        )
        assert latency and latency[-1] < 5.0, latency
        print(
            f"with a hanging receiver ({len(planned('hang'))} notifications stuck): "
            f"ops got {len(latency)} notifications, planned-to-delivered median "
            f"{latency[len(latency) // 2]:.3f} s, max {latency[-1]:.3f} s; "
            f"500->204 after {flaky_wait:.2f} s; 429 Retry-After 3 -> 204 after "
            f"{limited_wait:.2f} s"
        )
    finally:
        api.worker.stop(signal.SIGKILL)


def storm_alert(n: int, at: datetime, district: str = "339901") -> bytes:
    """A firing alarm of its own (alert id ``storm-<n>``), in street 339901001 of
    district 339901 or district-wide in another ``district``."""
    from streams.core.messages import AlertEvent, Evidence

    return AlertEvent(
        alert_id=f"storm-{n:05d}",
        fingerprint=f"storm{n:05d}",
        sequence=1,
        status="firing",
        grade=3,
        colour="yellow",
        kind="alarm",
        district=district,
        street="339901001" if district == "339901" else None,
        domain="environment",
        indicators=["iot.pm25"],
        department="environment",
        evidence=Evidence(rule="environment.pm25.mean15", version="1", observed=120.0),
        first_seen=at,
        last_update=at,
        event_time=at,
        headline_zh="江滨区PM2.5浓度黄色告警（III级）",
        headline_en="Jiangbin: PM2.5 concentration yellow alarm (grade III)",
    ).to_json()


def test_an_alert_storm_on_one_route_becomes_a_few_grouped_notifications(
    broker_bootstrap: str, tmp_path: Path, receivers: Receivers, fresh_topics: None
) -> None:
    api = notify_worker(broker_bootstrap, tmp_path, receivers, deadline="1h")
    try:
        # 5,000 alerts in 20 bursts a second apart: each group interval (2 s) gets new ones
        bursts, per_burst, every_s = 20, 250, 1.0
        t0 = time.time()
        for b in range(bursts):
            at = datetime.now(UTC)
            events = [
                SimEvent(
                    "city.emergency-command",
                    b"339901",
                    storm_alert(b * per_burst + i, at),
                    at,
                )
                for i in range(per_burst)
            ]
            run(produce(api.bootstrap, events))
            time.sleep(max(0.0, t0 + (b + 1) * every_s - time.time()))
        produced_s = time.time() - t0

        def covered() -> int:
            last = receivers.at("ops")[-1:] or None
            return (
                0
                if last is None
                else last[0].body["truncated_alerts"] + len(last[0].body["alerts"])
            )

        try:
            wait_for(lambda: covered() == 5000, 90, "a notification covering all 5,000 alerts")
        except AssertionError:
            summary = [
                (h.body["truncated_alerts"] + len(h.body["alerts"]), round(h.at - t0, 1))
                for h in receivers.at("ops")
            ]
            raise AssertionError(
                f"notifications (alerts covered, s): {summary}; answers {receivers.answers}"
            ) from None
        hits = receivers.at("ops")
        span = hits[-1].at - hits[0].at
        # group_wait 1 s, then at most one notification per group_interval (2 s)
        assert len(hits) <= 2 + span / 2.0, (len(hits), span)
        assert len({h.key for h in hits}) == len(hits)
        assert all(len(h.body["alerts"]) <= 100 for h in hits)
        print(
            f"storm: 5000 alerts produced in {produced_s:.0f} s -> {len(hits)} notifications "
            f"over {span:.0f} s"
        )
    finally:
        api.worker.stop(signal.SIGKILL)


def test_a_receiver_down_then_back_and_a_worker_crash_lose_no_notification(
    broker_bootstrap: str, tmp_path: Path, receivers: Receivers, fresh_topics: None
) -> None:
    from streams.core.messages import NOTIFICATIONS_TOPIC, OUTBOX_TOPIC, Notification

    receivers.down_until["ops"] = float("inf")  # down until both workers have tried it
    api = notify_worker(broker_bootstrap, tmp_path, receivers, deadline="1h")
    try:
        produce_street_fire(api)
        api.produce_incident()
        wait_for(lambda: receivers.answers.get("ops", 0) >= 3, 120, "attempts on the dead receiver")
        api.worker.stop(signal.SIGKILL)  # with deliveries under way
        api.worker.forget_group()
        api.worker.start()
        before = receivers.answers["ops"]
        wait_for(
            lambda: receivers.answers["ops"] >= before + 3,
            120,
            "the restarted worker's attempts on the dead receiver",
        )
        receivers.down_until["ops"] = 0.0  # back

        def planned() -> set[str]:
            return {
                Notification.model_validate_json(v).notification_id
                for v in run(read_topic(api.bootstrap, OUTBOX_TOPIC, idle_s=1))
                if Notification.model_validate_json(v).receiver == "ops"
            }

        wait_for(
            lambda: planned() and planned() <= {h.key for h in receivers.at("ops")},
            120,
            "every planned notification at the receiver",
        )
        keys = [h.key for h in receivers.at("ops")]
        assert len(keys) == len(set(keys)), "a notification was delivered twice"
        assert set(keys) == planned()
        outcomes = [
            orjson.loads(v) for v in run(read_topic(api.bootstrap, NOTIFICATIONS_TOPIC, idle_s=1))
        ]
        delivered = {
            o["notification_id"]
            for o in outcomes
            if o["outcome"] == "delivered" and o["receiver"] == "ops"
        }
        assert delivered == planned()
        assert all(o["attempts"] >= 1 for o in outcomes)
    finally:
        api.worker.stop(signal.SIGKILL)
