"""No citizen's personal data gets past ingest: appeals full of it go through a worker and
the real broker, and none of it appears on any topic the worker writes, in its log or in
any answer of its API (alerts with their evidence and timelines, vital signs, appeal
feedback and daily reports, performance, the audit trail).

The appeals are generated (from a seed hypothesis draws) in the shapes citizens and channel systems write
them: mobile numbers bare and grouped, 18-digit ID numbers, plates, e-mail addresses,
exact home addresses, and names from the simulator's list as citizens introduce
themselves, in the appeal's text and in the payload's own contact fields; and the
simulated city's appeals, which carry the same. Invalid appeals among them become dead
letters, which must not carry the data either.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from streams.api.auth import write_roles_with_tokens
from streams.core.config import DEFAULT_CONFIG_DIR, load_config
from streams.core.messages import (
    ALERTS_TOPIC,
    APPEAL_TALLIES_TOPIC,
    APPEALS_TOPIC,
    AUDIT_TOPIC,
    DEADLETTER_TOPIC,
    READINGS_TOPIC,
    VITALS_TOPIC,
)
from streams.sim.people import GIVEN_NAMES, ROADS, SURNAMES
from streams.sim.simulator import CitySimulator, SimEvent
from tests.harness import ApiWorker, Worker, produce, read_topic, run, wait_for

pytestmark = pytest.mark.broker

CFG = load_config()
CST = timezone(timedelta(hours=8))
STREETS = [(d.code, s.code) for d in CFG.city.districts for s in d.streets]
ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
OUTPUTS = (
    READINGS_TOPIC,
    DEADLETTER_TOPIC,
    VITALS_TOPIC,
    APPEAL_TALLIES_TOPIC,
    ALERTS_TOPIC,
    AUDIT_TOPIC,
)


def resident_id(region: str, birth: datetime, seq: int) -> str:
    body = f"{region}{birth:%Y%m%d}{seq:03d}"
    check = "10X98765432"[sum(int(c) * w for c, w in zip(body, ID_WEIGHTS, strict=True)) % 11]
    return body + check


def person(rng: random.Random) -> dict[str, str]:
    """One citizen's identifiers, as they would write them."""
    mobile = f"1{rng.choice('3456789')}{rng.randrange(10**9):09d}"
    grouping = rng.choice(["{}", "{} {} {}", "{}-{}-{}", "+86 {} {} {}"])
    written = mobile if grouping == "{}" else grouping.format(mobile[:3], mobile[3:7], mobile[7:])
    birth = datetime(1950, 1, 1) + timedelta(days=rng.randrange(20000))
    serial = "".join(rng.choices("0123456789ABCDEFGHJKLMNPQRSTUVWXYZ", k=3))
    return {
        "name": rng.choice(SURNAMES) + rng.choice(GIVEN_NAMES),
        "mobile": mobile,
        "mobile_written": written,
        "id": resident_id(rng.choice(["330102", "110105", "440305"]), birth, rng.randrange(1000)),
        "plate": f"浙{rng.choice('ABCDH')}{rng.randrange(10)}{serial}{rng.randrange(10)}",
        "email": f"{rng.choice(['zhang', 'li.na', 'w_fang'])}{rng.randrange(1, 9999)}"
        f"@{rng.choice(['163.com', 'qq.com'])}",
        "address": f"{rng.choice(ROADS)}{rng.randrange(1, 300)}号"
        f"{rng.randrange(1, 10)}单元{rng.randrange(101, 2803)}",
    }


TEXTS = (
    "我叫{name}，电话{mobile_written}，住在{address}，楼下饭店油烟太大了，没人管！",
    "投诉人：{name}，身份证号{id}，{plate}这辆车天天堵在消防通道，联系{email}",
    "{address}楼上装修噪音非常吵，我是{name}，手机{mobile_written}，邮箱{email}",
    "{name}反映：{plate}每天晚上在小区里按喇叭，太吵了，电话{mobile_written}",
)


def appeal(rng: random.Random, at: datetime) -> tuple[SimEvent, dict[str, str]]:
    """One appeal on the hotline or mailbox, and the identifiers of the person in it."""
    who = person(rng)
    district, street = rng.choice(STREETS)
    text = rng.choice(TEXTS).format(**who)
    when = at + timedelta(seconds=rng.randrange(3000))
    if rng.random() < 0.5:
        payload: dict[str, Any] = {
            "order_no": f"GD{rng.randrange(10**9, 10**10)}",
            "accepted_at": when.astimezone(CST).strftime("%Y-%m-%d %H:%M:%S"),
            "category": rng.choice(["噪声扰民", "异味", "占道经营", "没有这一类"]),
            "district_code": district,
            "street_code": street,
            "content": text,
            "caller_name": who["name"],
            "caller_phone": who["mobile"],
            "address": who["address"],
        }
        channel = "hotline_12345"
    else:
        payload = {
            "letter_id": f"SZXX-{rng.randrange(1000, 99999)}",
            "submitted_at": when.isoformat(),
            "kind": "投诉",
            "subject": f"{who['name']}反映的问题",
            "body": text,
            "category": rng.choice(["noise", "odour", "water_supply"]),
            "district": district,
            "street": street,
            "writer": {"name": who["name"], "phone": who["mobile"], "email": who["email"]},
        }
        channel = "mayor_mailbox"
    record = orjson.dumps({"channel": channel, "payload": payload})
    return SimEvent(APPEALS_TOPIC, district.encode(), record, when), who


def smell_cluster(rng: random.Random, at: datetime) -> list[tuple[SimEvent, dict[str, str]]]:
    """Six letters a minute apart about a smell in Binjiang street, each writer's data in
    its text and contact fields: a public-opinion warning whose evidence quotes them."""
    out = []
    for i in range(6):
        who = person(rng)
        when = at + timedelta(minutes=i)
        payload = {
            "letter_id": f"SZXX-SMELL-{i}",
            "submitted_at": when.isoformat(),
            "kind": "投诉",
            "subject": f"{who['name']}反映臭味",
            "body": f"我是{who['name']}，电话{who['mobile_written']}，住{who['address']}，"
            "垃圾站的恶臭太刺鼻了，非常恶心，忍无可忍！",
            "category": "odour",
            "district": "339901",
            "street": "339901001",
            "writer": {"name": who["name"], "phone": who["mobile"], "email": who["email"]},
        }
        record = orjson.dumps({"channel": "mayor_mailbox", "payload": payload})
        out.append((SimEvent(APPEALS_TOPIC, b"339901", record, when), who))
    return out


def identifiers(who: dict[str, str]) -> set[str]:
    return {who["name"], who["mobile"], who["id"], who["plate"], who["email"], who["address"]}


def api_answers(api: ApiWorker) -> dict[str, str]:
    """Every answer of the API about what the worker made of the appeals, by path: as
    the operator (who sees everything) and as the environment desk."""
    out: dict[str, str] = {}

    def ask(path: str, user: str = "cc.duty", **params: Any) -> Any:
        r = api.get(path, user, **params)
        assert r.status_code == 200, (path, r.text)
        out[f"{path} ({user}) {params or ''}"] = r.text
        return r.json()

    alerts = ask("/api/v1/alerts", limit=5000, open="false")["alerts"]
    alerts += ask("/api/v1/alerts", limit=5000)["alerts"]
    for alert in alerts:
        ask(f"/api/v1/alerts/{alert['alert_id']}")
    feedback = ask("/api/v1/appeals/feedback")
    ask("/api/v1/appeals/report")
    ask("/api/v1/appeals/feedback", "environment.desk")
    ask("/api/v1/appeals/report", "environment.desk")
    for path in ("/api/v1/districts", "/api/v1/performance", "/api/v1/catalogue"):
        ask(path)
    ask("/api/v1/audit", limit=1000)
    # not vacuous: the answers carry the appeals, their texts in the warnings' evidence
    assert sum(row["appeals"] for row in feedback["categories"]) >= 20, feedback["categories"]
    assert any(a["kind"] == "public_opinion" for a in alerts), [a["kind"] for a in alerts]
    return out


START = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=2)


@settings(
    max_examples=1,
    deadline=None,
    # one broker run of 150 appeals, drawn afresh each run and not shrunk (each try
    # would be another run of the worker): the failing identifier is named instead
    phases=(Phase.generate,),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.integers(0, 2**32))
def test_no_personal_data_of_an_appeal_reaches_a_topic_or_the_log(
    broker_bootstrap: str, fresh_topics: None, tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    appeals = [appeal(rng, START) for _ in range(150)]
    appeals += smell_cluster(rng, START + timedelta(minutes=20))
    sim = CitySimulator(CFG, seed=5, start=START, appeals=True)
    city = list(sim.events(timedelta(minutes=50)))
    simulated = [e for e in city if e.topic == APPEALS_TOPIC]
    assert len(simulated) >= 20
    # in event-time order with the city's, as channel systems would send them
    events = sorted([*city, *(event for event, _ in appeals)], key=lambda e: e.event_time)
    roles = tmp_path / "roles.yaml"
    tokens = write_roles_with_tokens(DEFAULT_CONFIG_DIR / "roles.yaml", roles)
    worker = Worker(broker_bootstrap, tmp_path, env={"CITYVITALS_ROLES_FILE": str(roles)})
    worker.start()
    try:
        run(produce(broker_bootstrap, events))
        total = len(events)
        wait_for(
            lambda: (
                worker.metric("cityvitals_ingest_readings_total")
                + worker.metric("cityvitals_ingest_deadletters_total")
                >= total
            ),
            180,
            "every record read",
        )
        citizen = worker.metric("cityvitals_ingest_readings_total", {"domain": "citizen"})
        assert citizen >= 100  # most appeals were read, not refused
        written = {topic: run(read_topic(broker_bootstrap, topic, idle_s=2)) for topic in OUTPUTS}
        answers = api_answers(ApiWorker(worker, tokens))
        log = worker.log_tail(100_000)
    finally:
        worker.stop()
    secrets = set().union(*(identifiers(who) for _, who in appeals))
    # the simulated city's appeals carry such data in their payloads' contact fields
    for event in simulated:
        payload = orjson.loads(event.value)["payload"]
        for field in ("caller_phone", "caller_name"):
            if isinstance(payload.get(field), str):
                secrets.add(payload[field])
    assert len(secrets) > 500
    text = {topic: b"\n".join(values).decode() for topic, values in written.items()}
    assert text[READINGS_TOPIC].count('"citizen.') >= 100
    for secret in sorted(secrets):
        for topic, body in text.items():
            assert secret not in body, f"{secret!r} on {topic}"
        assert secret not in log, f"{secret!r} in the worker's log"
        for path, body in answers.items():
            assert secret not in body, f"{secret!r} in the API's answer to {path}"
