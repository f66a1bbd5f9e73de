"""Notification routing: the tree of routes.yaml, matchers, inheritance, mute times, escalation."""

from __future__ import annotations

import io
import re
import shutil
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from streams.alerting.rules import load_thresholds
from streams.core.config import DEFAULT_CONFIG_DIR, ConfigError, load_config
from streams.core.messages import AlertEvent, AlertKind, AlertStatus, Evidence, Grade
from streams.notify.respond import LinkSigner
from streams.notify.routing import (
    LABELS,
    Level,
    Matcher,
    PayloadFormat,
    RoutingTree,
    escalation_chain,
    explain,
    group_key,
    labels_of,
    load_routes,
    next_level,
    parse_labels,
    routes_test_command,
    secret_variables,
    start_level,
)

CFG = load_config()
RULES = load_thresholds(CFG)
CST = timezone(timedelta(hours=8))

BASE = """\
version: 1
console_url: http://127.0.0.1:6066
receivers:
  - name: default
    url: http://127.0.0.1:9901/default
    format: native
  - name: fire
    url: http://127.0.0.1:9901/fire
    format: dingtalk
    secret: s3cret
  - name: red
    url: https://example.com/red?key=abc
    format: wecom
  - name: env
    url: http://127.0.0.1:9901/env
    format: slack
time_intervals:
  - name: nights
    time_intervals:
      - times: [{start_time: "22:00", end_time: "06:00"}]
        weekdays: ["monday:friday"]
route:
  receiver: default
  group_by: [district]
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 4h
  routes:
    - name: red
      matchers: [grade=I]
      receiver: red
      continue: true
    - name: fire
      matchers: [handler=fire]
      receiver: fire
      group_wait: 10s
      routes:
        - name: severe
          matchers: ['grade=~"I|II"']
          repeat_interval: 15m
    - name: env
      matchers: [domain=environment]
      receiver: env
      mute_time_intervals: [nights]
      routes:
        - name: loud
          matchers: [indicator=iot.noise_db]
          send_resolved: false
        - name: unmuted
          matchers: [grade=II]
          mute_time_intervals: []
escalation:
  ack_deadlines: {I: 5m, II: 15m, III: 1h, IV: 4h}
  levels: {street: default, district: fire, city: red}
  departments:
    fire:
      ack_deadlines: {I: 2m}
      levels: {district: red}
"""


@pytest.fixture
def routes_file(tmp_path: Path) -> Path:
    path = tmp_path / "routes.yaml"
    path.write_text(BASE, encoding="utf-8")
    return path


def tree_of(text: str, tmp_path: Path, **kwargs: Any) -> RoutingTree:
    path = tmp_path / "routes.yaml"
    path.write_text(text, encoding="utf-8")
    return load_routes(path, CFG, **kwargs)


def paths(tree: RoutingTree, **labels: str) -> list[str]:
    return [r.path for r in tree.match(labels)]


def receivers(tree: RoutingTree, **labels: str) -> list[str]:
    return [r.receiver.name for r in tree.match(labels)]


# --- the shipped file ---------------------------------------------------------------------


SHIPPED = DEFAULT_CONFIG_DIR / "routes.yaml"


def shipped() -> RoutingTree:
    return load_routes(SHIPPED, CFG, rules=RULES, environ={})


def test_shipped_routes_send_each_department_to_its_desk() -> None:
    tree = shipped()
    fire = {"department": "fire", "district": "339901", "street": "339901001", "kind": "alarm"}
    assert receivers(tree, **fire, grade="III", domain="fire") == ["fire-duty-dingtalk"]
    # grade I from any department: the city emergency group, the public CAP feed, and on
    assert receivers(tree, **fire, grade="I", domain="fire") == [
        "city-emergency-wecom",
        "cap-feed",
        "fire-duty-dingtalk",
    ]
    assert paths(tree, **fire, grade="I")[-1] == "root/fire/severe"
    env = {"department": "environment", "domain": "environment", "district": "339902"}
    assert receivers(tree, **env, grade="III", kind="alarm") == ["environment-slack"]
    assert receivers(tree, **env, grade="I", kind="alarm") == [
        "city-emergency-wecom",
        "cap-feed",
        "environment-slack",
    ]
    traffic = {"department": "traffic", "domain": "traffic", "district": "339901"}
    assert receivers(tree, **traffic, grade="IV", kind="alarm") == ["transport-alertmanager"]
    assert tree.receivers["transport-alertmanager"].format is PayloadFormat.ALERTMANAGER
    # data quality goes to the data's owners, never to the emergency group, whatever the grade
    dq = {"department": "water", "district": "339901", "kind": "data_quality"}
    for grade in ("I", "IV"):
        (result,) = tree.match({**dq, "grade": grade})
        assert result.receiver.name == "data-owners"
        assert result.repeat_interval_s == 24 * 3600 and not result.send_resolved
    # composite alerts belong to the command centre: nothing else takes them
    comp = {"department": "command_centre", "district": "339903", "kind": "composite"}
    assert paths(tree, **comp, grade="III") == ["root"]
    # fire co-handling a water alert: the fire desk
    co = {"department": "water", "co_departments": "fire", "district": "339901", "kind": "alarm"}
    assert receivers(tree, **co, grade="III", domain="utilities") == ["fire-duty-dingtalk"]


def test_shipped_routes_mute_the_road_works_at_night_only_for_minor_grades() -> None:
    tree = shipped()
    works = {
        "department": "traffic",
        "domain": "traffic",
        "district": "339902",
        "street": "339902002",
        "kind": "alarm",
    }
    tuesday_night = datetime(2026, 12, 8, 23, 30, tzinfo=CST)
    tuesday_noon = datetime(2026, 12, 8, 12, 0, tzinfo=CST)
    (minor,) = tree.match({**works, "grade": "III"})
    assert minor.path == "root/transport/nanmen-road-works"
    assert minor.receiver.name == "transport-alertmanager"  # inherited
    assert minor.muted(tuesday_night) and not minor.muted(tuesday_noon)
    assert minor.muted_by(tuesday_night) == "nanmen-road-works-night"
    assert not minor.muted(datetime(2027, 3, 2, 23, 30, tzinfo=CST))  # works are over
    serious = tree.match({**works, "grade": "II"})
    assert [r.path for r in serious] == ["root/public-warning", "root/transport"]
    assert not any(r.muted(tuesday_night) for r in serious)


def test_shipped_escalation() -> None:
    tree = shipped()
    assert [tree.deadline_for(g) for g in Grade] == [300, 900, 3600, 4 * 3600]
    assert tree.deadline_for(Grade.I, "fire") == 180
    assert tree.deadline_for("III", "fire") == 3600  # not overridden: the default
    assert tree.escalation_receiver(Level.CITY).name == "city-emergency-wecom"
    assert tree.escalation_receiver("street", "fire").name == "fire-duty-dingtalk"
    assert tree.escalation_receiver("street", "water").name == "street-duty"


def test_shipped_routes_hold_no_secret_and_name_each_variable() -> None:
    tree = shipped()
    command = tree.receivers["command-centre"]
    assert command.secret_value() is None
    assert command.secret_source == "env:CITYVITALS_NOTIFY_SECRET_COMMAND"
    assert [str(p) for p in tree.secret_problems] == [
        f"{what} is not set; set it with {name} or {name}_FILE"
        for what, name in [
            ("the signing secret of receiver command-centre", "CITYVITALS_NOTIFY_SECRET_COMMAND"),
            ("the signing secret of receiver fire-duty-dingtalk", "CITYVITALS_NOTIFY_SECRET_FIRE"),
            ("the signing secret of receiver data-owners", "CITYVITALS_NOTIFY_SECRET_DATA"),
            ("the signing secret of receiver street-duty", "CITYVITALS_NOTIFY_SECRET_STREET"),
            (
                "the signing secret of receiver district-duty-dingtalk",
                "CITYVITALS_NOTIFY_SECRET_DISTRICT",
            ),
            ("the responder-link signing key", "CITYVITALS_RESPONDER_KEY"),
        ]
    ]
    assert tree.responder_links is None  # no key, no links (and no worker)
    assert secret_variables(DEFAULT_CONFIG_DIR / "routes.yaml") == [
        "CITYVITALS_NOTIFY_SECRET_COMMAND",
        "CITYVITALS_NOTIFY_SECRET_FIRE",
        "CITYVITALS_NOTIFY_SECRET_DATA",
        "CITYVITALS_NOTIFY_SECRET_STREET",
        "CITYVITALS_NOTIFY_SECRET_DISTRICT",
        "CITYVITALS_RESPONDER_KEY",
    ]


def test_shipped_secrets_come_from_the_environment_or_files(tmp_path: Path) -> None:
    env = {name: f"{name}-{'s' * 32}" for name in secret_variables(SHIPPED)}
    (tmp_path / "fire").write_text("fire-secret-from-a-mounted-file-0123456789\n")
    del env["CITYVITALS_NOTIFY_SECRET_FIRE"]
    env["CITYVITALS_NOTIFY_SECRET_FIRE_FILE"] = str(tmp_path / "fire")
    tree = load_routes(SHIPPED, CFG, environ=env)
    assert tree.secret_problems == ()
    command = tree.receivers["command-centre"]
    assert command.secret_value() == env["CITYVITALS_NOTIFY_SECRET_COMMAND"]
    assert command.secret_source == "env:CITYVITALS_NOTIFY_SECRET_COMMAND"
    assert "sssss" not in repr(command)  # a SecretStr
    fire = tree.receivers["fire-duty-dingtalk"]
    assert fire.secret_value() == "fire-secret-from-a-mounted-file-0123456789"  # no line break
    assert fire.secret_source == "env:CITYVITALS_NOTIFY_SECRET_FIRE_FILE"
    assert tree.receivers["environment-slack"].secret_value() is None
    assert tree.responder_links is not None


# --- matching -----------------------------------------------------------------------------


def test_first_match_wins_among_siblings(tmp_path: Path) -> None:
    tree = tree_of(BASE, tmp_path)
    # fire and environment both match a fire alert in the environment domain: fire comes first
    assert paths(tree, department="fire", domain="environment", grade="III") == ["root/fire"]
    assert paths(tree, department="environment", domain="environment", grade="III") == ["root/env"]


def test_continue_lets_later_siblings_match(tmp_path: Path) -> None:
    tree = tree_of(BASE, tmp_path)
    assert paths(tree, department="fire", grade="I") == ["root/red", "root/fire/severe"]
    # continue with nothing after it that matches: the continuing route alone
    assert paths(tree, department="water", grade="I") == ["root/red"]
    # without continue the search stops at the first match
    no_continue = BASE.replace("      continue: true\n", "")
    assert paths(tree_of(no_continue, tmp_path), department="fire", grade="I") == ["root/red"]


def test_the_deepest_matching_route_applies(tmp_path: Path) -> None:
    tree = tree_of(BASE, tmp_path)
    assert paths(tree, department="fire", grade="II") == ["root/fire/severe"]
    assert paths(tree, department="fire", grade="IV") == ["root/fire"]
    assert paths(tree, department="water", grade="IV") == ["root"]  # nothing else: the root


def test_children_inherit_unless_they_set(tmp_path: Path) -> None:
    tree = tree_of(BASE, tmp_path)
    (severe,) = tree.match({"department": "fire", "grade": "II"})
    assert severe.receiver.name == "fire"  # from root/fire
    assert severe.group_wait_s == 10  # from root/fire
    assert severe.group_interval_s == 300  # from root
    assert severe.repeat_interval_s == 15 * 60  # its own
    assert severe.group_by == ("district",)
    assert severe.send_resolved is True  # the root's default
    (loud,) = tree.match({"domain": "environment", "indicator": "iot.noise_db", "grade": "III"})
    assert loud.path == "root/env/loud" and loud.receiver.name == "env"
    assert not loud.send_resolved
    assert [m.name for m in loud.mute_intervals] == ["nights"]  # inherited
    (unmuted,) = tree.match({"domain": "environment", "grade": "II"})
    assert unmuted.path == "root/env/unmuted" and unmuted.mute_intervals == ()  # cleared


def test_root_defaults(tmp_path: Path) -> None:
    text = re.sub(
        r"  group_by.*\n  group_wait.*\n  group_interval.*\n  repeat_interval.*\n", "", BASE
    )
    (root,) = tree_of(text, tmp_path).match({"department": "water"})
    assert root.group_by == ()
    assert (root.group_wait_s, root.group_interval_s, root.repeat_interval_s) == (30, 300, 14400)
    assert root.send_resolved


@pytest.mark.parametrize(
    ("matcher", "labels", "expected"),
    [
        ("grade=I", {"grade": "I"}, True),
        ("grade=I", {"grade": "II"}, False),
        ("grade!=I", {"grade": "II"}, True),
        ('grade=~"I|II"', {"grade": "II"}, True),
        ('grade=~"I|II"', {"grade": "III"}, False),
        ("grade=~I", {"grade": "II"}, False),  # anchored: I does not match II
        ('rule=~"environment\\\\..*"', {"rule": "environment.pm25.mean15"}, True),
        ('rule=~"pm25"', {"rule": "environment.pm25.mean15"}, False),
        ('rule!~"anomaly\\\\..*"', {"rule": "environment.pm25.mean15"}, True),
        ('street=""', {}, True),  # an absent label is empty
        ('street=""', {"street": "339901001"}, False),
        ('street!=""', {"street": "339901001"}, True),
        ("street!~.+", {}, True),
        ("handler=fire", {"department": "water", "co_departments": "gas,fire"}, True),
        ("handler=fire", {"department": "fire"}, True),
        ("handler=fire", {"department": "water", "co_departments": "gas"}, False),
        ("handler!=fire", {"department": "water", "co_departments": "fire"}, False),
        ("handler!=fire", {"department": "water"}, True),
        ('handler=~"fi.*"', {"department": "water", "co_departments": "fire"}, True),
        ('handler!~"fi.*"', {"department": "water", "co_departments": "fire"}, False),
        ("department=fire", {"department": "water", "co_departments": "fire"}, False),
        ('district = "339901"', {"district": "339901"}, True),
        ('indicator="a\\"b"', {"indicator": 'a"b'}, True),
    ],
)
def test_matchers(matcher: str, labels: dict[str, str], expected: bool) -> None:
    assert Matcher.parse(matcher).matches(labels) is expected


def test_matcher_text_round_trips() -> None:
    for text in ('grade=~"I|II"', 'handler!="fire"', 'street=""', 'rule!~"a\\\\.b"'):
        m = Matcher.parse(text)
        assert str(m) == text
        assert Matcher.parse(str(m)) == m


def test_group_key_and_group_labels(tmp_path: Path) -> None:
    tree = tree_of(BASE, tmp_path)
    labels = {"department": "fire", "district": "339901", "grade": "II"}
    (severe,) = tree.match(labels)
    assert severe.group_labels(labels) == {"district": "339901"}
    assert group_key(severe, labels) == 'root/fire/severe:{district="339901"}'
    # an absent grouping label is left out; "..." groups by every label
    assert group_key(severe, {"department": "fire", "grade": "II"}) == "root/fire/severe:{}"
    every = tree_of(BASE.replace("group_by: [district]", 'group_by: ["..."]'), tmp_path)
    (r,) = every.match(labels)
    assert group_key(r, labels) == (
        'root/fire/severe:{department="fire", district="339901", grade="II"}'
    )


def test_unnamed_routes_are_named_by_position(tmp_path: Path) -> None:
    tree = tree_of(BASE.replace("    - name: fire\n", "    -\n"), tmp_path)
    assert paths(tree, department="fire", grade="II") == ["root/routes[1]/severe"]


# --- labels -------------------------------------------------------------------------------


def alert(**overrides: Any) -> AlertEvent:
    t = datetime(2026, 11, 24, 8, 15, tzinfo=CST)
    values: dict[str, Any] = {
        "alert_id": "a-1",
        "fingerprint": "0123456789abcdef",
        "sequence": 1,
        "status": AlertStatus.FIRING,
        "grade": Grade.II,
        "colour": "orange",
        "kind": AlertKind.ALARM,
        "district": "339901",
        "street": "339901001",
        "domain": "fire",
        "indicators": ["fire.smoke_alarms", "fire.temperature_c"],
        "department": "fire",
        "co_departments": ["public_security", "gas"],
        "evidence": Evidence(rule="fire.smoke.count5", version="v1"),
        "first_seen": t,
        "last_update": t,
        "event_time": t,
        "headline_zh": "烟感告警",
        "headline_en": "Smoke alarms",
    }
    values.update(overrides)
    return AlertEvent(**values)


def test_labels_of_an_alert() -> None:
    assert labels_of(alert()) == {
        "co_departments": "public_security,gas",
        "department": "fire",
        "district": "339901",
        "domain": "fire",
        "grade": "II",
        "indicator": "fire.smoke_alarms",
        "kind": "alarm",
        "rule": "fire.smoke.count5",
        "street": "339901001",
    }
    bare = labels_of(
        alert(street=None, domain=None, indicators=[], co_departments=[], kind="composite")
    )
    assert bare == {
        "department": "fire",
        "district": "339901",
        "grade": "II",
        "kind": "composite",
        "rule": "fire.smoke.count5",
    }
    assert set(labels_of(alert())) <= set(LABELS)


def test_a_co_handled_alert_reaches_the_co_handler(tmp_path: Path) -> None:
    tree = tree_of(BASE, tmp_path)
    gas = alert(department="gas", co_departments=["fire"], domain="utilities", grade=Grade.IV)
    assert [r.path for r in tree.match(labels_of(gas))] == ["root/fire"]


# --- mute time intervals ------------------------------------------------------------------


def interval(tmp_path: Path, spec: str) -> Any:
    text = BASE.replace(
        '      - times: [{start_time: "22:00", end_time: "06:00"}]\n'
        '        weekdays: ["monday:friday"]\n',
        spec,
    )
    return tree_of(text, tmp_path).time_intervals["nights"]


def test_a_night_interval_crosses_midnight_and_belongs_to_the_day_it_starts(
    routes_file: Path,
) -> None:
    nights = load_routes(routes_file, CFG).time_intervals["nights"]  # Mon-Fri 22:00-06:00

    def at(day: int, hour: int, minute: int = 0) -> datetime:
        return datetime(2026, 12, day, hour, minute, tzinfo=CST)

    assert nights.muted(at(4, 22, 0))  # Friday 22:00: starts
    assert nights.muted(at(4, 23, 59))
    assert nights.muted(at(5, 3, 0))  # Saturday 03:00: still Friday's night
    assert not nights.muted(at(5, 6, 0))  # Saturday 06:00: over (end excluded)
    assert not nights.muted(at(5, 23, 0))  # Saturday night: not a weekday
    assert not nights.muted(at(7, 3, 0))  # Monday 03:00 belongs to Sunday night
    assert nights.muted(at(8, 3, 0))  # Tuesday 03:00 belongs to Monday night
    assert not nights.muted(at(4, 21, 59))
    assert not nights.muted(at(4, 12, 0))
    # instants are converted to the city's time zone (Asia/Shanghai, UTC+8)
    assert nights.muted(datetime(2026, 12, 4, 15, 30, tzinfo=UTC))  # Friday 23:30 in the city
    assert nights.muted(datetime(2026, 12, 4, 19, 0, tzinfo=UTC))  # Saturday 03:00
    assert not nights.muted(datetime(2026, 12, 4, 13, 30, tzinfo=UTC))  # Friday 21:30
    with pytest.raises(ValueError, match="time zone"):
        nights.muted(datetime(2026, 12, 4, 23, 0))


def test_interval_fields_days_months_years_and_location(tmp_path: Path) -> None:
    last_days = interval(tmp_path, '      - days_of_month: ["-2:-1"]\n        months: [february]\n')
    assert last_days.muted(datetime(2027, 2, 28, 12, tzinfo=CST))  # 28 days in Feb 2027
    assert last_days.muted(datetime(2027, 2, 27, 0, 0, tzinfo=CST))
    assert not last_days.muted(datetime(2027, 2, 26, 23, 59, tzinfo=CST))
    assert last_days.muted(datetime(2028, 2, 29, 12, tzinfo=CST))  # a leap year
    assert not last_days.muted(datetime(2027, 3, 31, 12, tzinfo=CST))  # not February
    years = interval(tmp_path, '      - years: ["2027:2028"]\n        months: ["1:3"]\n')
    assert years.muted(datetime(2027, 3, 31, 23, 59, tzinfo=CST))
    assert not years.muted(datetime(2027, 4, 1, 0, 0, tzinfo=CST))
    assert not years.muted(datetime(2029, 1, 1, 12, tzinfo=CST))
    utc = interval(
        tmp_path,
        '      - times: [{start_time: "00:00", end_time: "01:00"}]\n        location: UTC\n',
    )
    assert utc.muted(datetime(2026, 12, 4, 8, 30, tzinfo=CST))  # 00:30 UTC
    assert not utc.muted(datetime(2026, 12, 4, 0, 30, tzinfo=CST))
    days = interval(tmp_path, "      - days_of_month: [1, 15]\n")
    assert days.muted(datetime(2026, 12, 15, 8, tzinfo=CST))
    assert not days.muted(datetime(2026, 12, 2, 8, tzinfo=CST))
    two_specs = interval(
        tmp_path,
        '      - weekdays: [saturday]\n      - times: [{start_time: "12:00", end_time: "24:00"}]\n',
    )
    assert two_specs.muted(datetime(2026, 12, 5, 1, tzinfo=CST))  # any spec: Saturday
    assert two_specs.muted(datetime(2026, 12, 7, 23, 59, tzinfo=CST))  # the afternoon spec
    assert not two_specs.muted(datetime(2026, 12, 7, 11, 59, tzinfo=CST))


def test_a_muted_route_still_stops_the_search(tmp_path: Path) -> None:
    tree = tree_of(BASE, tmp_path)
    friday_night = datetime(2026, 12, 4, 23, tzinfo=CST)
    (env,) = tree.match({"domain": "environment", "department": "environment", "grade": "III"})
    assert env.muted(friday_night) and env.muted_by(friday_night) == "nights"
    assert not env.muted(friday_night + timedelta(hours=12))


# --- validation ---------------------------------------------------------------------------

ERRORS = [
    # (old, new, expected key path, reason fragment, text on the expected line)
    (
        "      receiver: fire\n      group_wait",
        "      receiver: fyre\n      group_wait",
        "route.routes[1].receiver",
        "unknown receiver 'fyre'; known: ['default', 'env', 'fire', 'red']",
        "receiver: fyre",
    ),
    (
        "[handler=fire]",
        "[handler=fyre]",
        "route.routes[1].matchers[0]",
        "unknown department 'fyre' in matcher handler=\"fyre\"",
        "handler=fyre",
    ),
    (
        "[domain=environment]",
        "[domain=environmnt]",
        "route.routes[2].matchers[0]",
        "unknown domain 'environmnt'",
        "domain=",
    ),
    ("[grade=I]", "[grade=V]", "route.routes[0].matchers[0]", "unknown grade 'V'", "grade=V"),
    ("[grade=I]", "[kind=alert]", "route.routes[0].matchers[0]", "unknown kind 'alert'", "kind="),
    (
        "[grade=I]",
        "[district=999999]",
        "route.routes[0].matchers[0]",
        "unknown district '999999'",
        "district=",
    ),
    (
        "[grade=I]",
        "[street=339901009]",
        "route.routes[0].matchers[0]",
        "unknown street '339901009'",
        "street=",
    ),
    (
        "[grade=I]",
        "[indicator=iot.pm10]",
        "route.routes[0].matchers[0]",
        "unknown indicator 'iot.pm10'",
        "indicator=",
    ),
    (
        "[grade=I]",
        "['district=~\"4.*\"']",
        "route.routes[0].matchers[0]",
        'district=~"4.*" matches no known district, so it never holds',
        "district=~",
    ),
    (
        "[grade=I]",
        "['kind!~\".*\"']",
        "route.routes[0].matchers[0]",
        "matches every known kind, so it never holds",
        "kind!~",
    ),
    (
        "[grade=I]",
        "[grade!=IIII]",
        "route.routes[0].matchers[0]",
        "unknown grade 'IIII'",
        "grade!=",
    ),
    (
        "[grade=I]",
        "['district!=\"\"']",
        "route.routes[0].matchers[0]",
        'every alert has a district, so district!="" always holds',
        "district!=",
    ),
    (
        "[grade=I]",
        "[severity=critical]",
        "route.routes[0].matchers[0]",
        "unknown label 'severity' in matcher 'severity=critical'",
        "severity",
    ),
    (
        "[grade=I]",
        "[co_departments=fire]",
        "route.routes[0].matchers[0]",
        "(match co-departments with handler)",
        "co_departments",
    ),
    ("[grade=I]", "[grade]", "route.routes[0].matchers[0]", "'grade' is not a matcher", "[grade]"),
    (
        "[grade=I]",
        "['rule=~\"(\"']",
        "route.routes[0].matchers[0]",
        "invalid regular expression '('",
        "rule=~",
    ),
    (
        "group_wait: 10s",
        "group_wait: 5x",
        "route.routes[1].group_wait",
        "'5x' is not a duration",
        "group_wait: 5x",
    ),
    (
        "group_wait: 10s",
        "group_wait: 10m",
        "route.routes[1].group_wait",
        "group_wait (10m) is longer than group_interval (5m, inherited)",
        "group_wait: 10m",
    ),
    (
        "repeat_interval: 15m",
        "repeat_interval: 1m",
        "route.routes[1].routes[0].repeat_interval",
        "repeat_interval (1m) is shorter than group_interval (5m, inherited)",
        "repeat_interval: 1m",
    ),
    (
        "url: http://127.0.0.1:9901/env",
        "url: ftp://127.0.0.1/env",
        "receivers[3].url",
        "url must be an http:// or https:// URL with a host, got 'ftp://127.0.0.1/env'",
        "ftp://",
    ),
    (
        "url: http://127.0.0.1:9901/env",
        "url: 127.0.0.1:9901/env",
        "receivers[3].url",
        "http:// or https://",
        "url: 127",
    ),
    (
        "console_url: http://127.0.0.1:6066",
        "console_url: localhost:6066",
        "console_url",
        "console_url must be an http:// or https:// URL",
        "console_url",
    ),
    (
        "  - name: env\n",
        "  - name: fire\n",
        "receivers[3].name",
        "duplicate receiver name 'fire' (also receivers[1])",
        "  - name: fire",
    ),
    (
        "    format: wecom\n",
        "    format: pagerduty\n",
        "receivers[2].format",
        "Input should be 'native', 'alertmanager', 'cap', 'dingtalk', 'wecom' or 'slack'",
        "pagerduty",
    ),
    (
        "mute_time_intervals: [nights]",
        "mute_time_intervals: [days]",
        "route.routes[2].mute_time_intervals[0]",
        "mute time interval 'days' is not defined under time_intervals; defined: ['nights']",
        "[days]",
    ),
    (
        "{I: 5m, II: 15m, III: 1h, IV: 4h}",
        "{I: 5h, II: 15m, III: 1h, IV: 4h}",
        "escalation.ack_deadlines.I",
        "grade I (more serious) has a longer deadline (5h) than grade II (15m); "
        "deadlines must not decrease in severity",
        "{I: 5h",
    ),
    (
        "{I: 5m, II: 15m, III: 1h, IV: 4h}",
        "{I: 5m, II: 15m, III: 1h, IV: 0s}",
        "escalation.ack_deadlines.IV",
        "the deadline of grade IV must be longer than 0",
        "IV: 0s",
    ),
    (
        "{I: 5m, II: 15m, III: 1h, IV: 4h}",
        "{I: 5m, II: 15m, III: 1h}",
        "escalation.ack_deadlines",
        "every grade needs a deadline; missing: IV",
        "ack_deadlines: {I: 5m, II: 15m, III: 1h}",
    ),
    (
        "ack_deadlines: {I: 2m}",
        "ack_deadlines: {II: 2h}",
        "escalation.departments.fire.ack_deadlines.II",
        "grade II (more serious) has a longer deadline (2h) than grade III (1h) once merged "
        "with the defaults",
        "{II: 2h}",
    ),
    (
        "levels: {district: red}",
        "levels: {district: blue}",
        "escalation.departments.fire.levels.district",
        "unknown receiver 'blue'",
        "district: blue",
    ),
    (
        "    fire:\n      ack_deadlines",
        "    fyre:\n      ack_deadlines",
        "escalation.departments.fyre",
        "unknown department 'fyre'",
        "ack_deadlines: {I: 2m}",  # a mapping's line is its first key's
    ),
    (
        "levels: {street: default, district: fire, city: red}",
        "levels: {street: default, district: fire}",
        "escalation.levels.city",
        "Field required",
        "levels: {street",
    ),
    (
        'start_time: "22:00"',
        "start_time: 22:00",
        "time_intervals[0].time_intervals[0].times[0].start_time",
        'write times of day as quoted "HH:MM" strings (YAML reads an unquoted 22:00 as the '
        "number 1320), got 1320",
        "start_time: 22:00",
    ),
    (
        'end_time: "06:00"',
        'end_time: "25:00"',
        "time_intervals[0].time_intervals[0].times[0].end_time",
        "'25:00' is not a time of day between 00:00 and 24:00",
        "25:00",
    ),
    (
        '{start_time: "22:00", end_time: "06:00"}',
        '{start_time: "22:00", end_time: "22:00"}',
        "time_intervals[0].time_intervals[0].times[0]",
        "start_time equals end_time: the range is empty",
        'end_time: "22:00"',
    ),
    (
        'weekdays: ["monday:friday"]',
        'weekdays: ["friday:monday"]',
        "time_intervals[0].time_intervals[0].weekdays[0]",
        "range 'friday:monday' starts after it ends",
        "friday:monday",
    ),
    (
        'weekdays: ["monday:friday"]',
        "weekdays: [mondays]",
        "time_intervals[0].time_intervals[0].weekdays[0]",
        "'mondays' is not a weekday; known: monday, tuesday",
        "mondays",
    ),
    (
        'weekdays: ["monday:friday"]',
        "days_of_month: [1:5]",
        "time_intervals[0].time_intervals[0].days_of_month[0]",
        "day of month 65 is out of range -31..31 (not 0); write ranges as quoted strings",
        "days_of_month",
    ),
    (
        'weekdays: ["monday:friday"]',
        "months: [smarch]",
        "time_intervals[0].time_intervals[0].months[0]",
        "'smarch' is not a month",
        "smarch",
    ),
    (
        'weekdays: ["monday:friday"]',
        "location: Mars/Olympus",
        "time_intervals[0].time_intervals[0].location",
        "unknown time zone 'Mars/Olympus'",
        "Mars",
    ),
    (
        "      continue: true",
        "      continu: true",
        "route.routes[0].continu",
        "Extra inputs are not permitted",
        "continu:",
    ),
    (
        "  receiver: default\n  group_by",
        "  receiver: default\n  matchers: [grade=I]\n  group_by",
        "route.matchers",
        "the root route matches every alert; it takes no matchers",
        "  matchers: [grade=I]",
    ),
    (
        "route:\n  receiver: default\n",
        "route:\n",
        "route",
        "the root route needs a receiver",
        "  group_by: [district]",
    ),
    (
        "  routes:\n    - name: red",
        "  mute_time_intervals: [nights]\n  routes:\n    - name: red",
        "route.mute_time_intervals",
        "the root route cannot be muted",
        "  mute_time_intervals",
    ),
    (
        "[handler=fire]",
        "[]",
        "route.routes[2]",
        "never reached: routes[1] before it has no matchers and no 'continue: true'",
        "    - name: env",
    ),
    (
        "[indicator=iot.noise_db]",
        '[district="339901", street="339902001"]',
        "route.routes[2].routes[0].matchers[1]",
        "street '339902001' is in district '339902', not '339901': this route can never match",
        "street=",
    ),
    (
        "    - name: env\n",
        "    - name: fire\n",
        "route.routes[2].name",
        "duplicate route name 'fire' among siblings",
        "    - name: fire",
    ),
    (
        "group_by: [district]",
        "group_by: [distric]",
        "route.group_by[0]",
        "unknown label 'distric'",
        "distric]",
    ),
    (
        "group_by: [district]",
        'group_by: [district, "..."]',
        "route.group_by[1]",
        "'...' (every label) stands alone",
        "group_by",
    ),
    ("version: 1", "version: 2", "version", "Input should be 1", "version"),
]


@pytest.mark.parametrize(("old", "new", "path", "reason", "on_line"), ERRORS)
def test_invalid_routes_name_file_line_path_and_reason(
    routes_file: Path, old: str, new: str, path: str, reason: str, on_line: str
) -> None:
    text = routes_file.read_text(encoding="utf-8")
    at = text.index(old)
    changed = text.replace(old, new, 1)
    routes_file.write_text(changed, encoding="utf-8")
    line = changed[: changed.index(on_line, max(0, at - 40))].count("\n") + 1
    with pytest.raises(ConfigError) as info:
        load_routes(routes_file, CFG, environ={})
    message = str(info.value)
    assert message.startswith(f"{routes_file}:{line}: {path}: "), message
    assert reason in message, message


def test_rule_matchers_are_checked_against_the_threshold_rules(routes_file: Path) -> None:
    text = routes_file.read_text(encoding="utf-8").replace("[grade=I]", "[rule=pm25.mean]")
    routes_file.write_text(text, encoding="utf-8")
    load_routes(routes_file, CFG)  # without the rules: not checked
    with pytest.raises(ConfigError, match=r"routes\.yaml:\d+: .*unknown rule 'pm25\.mean'"):
        load_routes(routes_file, CFG, rules=RULES)
    for rule in (
        "environment.pm25.mean15",
        "environment.pm25.mean15.forecast",
        "data_quality.silence",
    ):
        routes_file.write_text(text.replace("rule=pm25.mean", f"rule={rule}"), encoding="utf-8")
        load_routes(routes_file, CFG, rules=RULES)


def test_secrets_and_urls_from_the_environment(routes_file: Path) -> None:
    text = routes_file.read_text(encoding="utf-8").replace(
        "    secret: s3cret\n", "    secret: s3cret\n    secret_env: FIRE_SECRET\n"
    )
    text = text.replace("    url: https://example.com/red?key=abc\n", "    url_env: RED_URL\n")
    routes_file.write_text(text, encoding="utf-8")
    env = {"FIRE_SECRET": "from-env", "RED_URL": "https://qyapi.example/send?key=k1"}
    tree = load_routes(routes_file, CFG, environ=env)
    assert tree.receivers["fire"].secret_value() == "from-env"  # the environment wins
    assert tree.receivers["red"].url == "https://qyapi.example/send?key=k1"
    assert tree.receivers["red"].url_source == "env:RED_URL"
    assert tree.receivers["red"].display_url == "https://qyapi.example/send?key=***"
    tree = load_routes(
        routes_file, CFG, environ={"RED_URL": "https://x.example/", "FIRE_SECRET": ""}
    )
    assert tree.receivers["fire"].secret_value() == "s3cret"  # unset or empty: the literal
    with pytest.raises(ConfigError, match=r"receivers\[2\]\.url_env: environment variable RED_URL"):
        load_routes(routes_file, CFG, environ={})
    with pytest.raises(ConfigError, match=r"receivers\[2\]\.url_env: \$RED_URL: url must be"):
        load_routes(routes_file, CFG, environ={"RED_URL": "file:///etc/passwd"})


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_routes(tmp_path / "routes.yaml", CFG)


# --- escalation ---------------------------------------------------------------------------


def test_escalation_deadlines_and_receivers(routes_file: Path) -> None:
    tree = load_routes(routes_file, CFG)
    assert tree.deadline_for(Grade.I) == 300 and tree.deadline_for("IV") == 4 * 3600
    assert tree.deadline_for(Grade.I, "fire") == 120  # the department's own
    assert tree.deadline_for(Grade.II, "fire") == 900  # not overridden
    assert tree.deadline_for(Grade.I, "water") == 300
    with pytest.raises(ValueError, match="unknown grade"):
        tree.deadline_for("V")
    assert tree.escalation_receiver(Level.STREET).name == "default"
    assert tree.escalation_receiver("district").name == "fire"
    assert tree.escalation_receiver("district", "fire").name == "red"
    assert tree.escalation_receiver(Level.CITY, "fire").name == "red"  # not overridden


def test_escalation_climbs_from_the_alerts_own_level() -> None:
    on_street = {"district": "339901", "street": "339901001"}
    assert start_level(on_street) is Level.STREET
    assert escalation_chain(on_street) == (Level.DISTRICT, Level.CITY)
    assert start_level({"district": "339901"}) is Level.DISTRICT
    assert escalation_chain({"district": "339901"}) == (Level.CITY,)
    assert next_level(Level.STREET) is Level.DISTRICT
    assert next_level("district") is Level.CITY
    assert next_level(Level.CITY) is None


# --- cityvitals routes test ---------------------------------------------------------------


def run_test_command(config_dir: Path, labels: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = routes_test_command(
        config_dir,
        labels,
        out=Console(file=out, width=200),
        err=Console(file=err, width=200),
        at=datetime(2026, 12, 8, 23, 30, tzinfo=CST),
    )
    return code, out.getvalue(), err.getvalue()


def test_routes_test_prints_routes_receivers_timers_and_mutes() -> None:
    code, out, err = run_test_command(
        DEFAULT_CONFIG_DIR,
        ["street=339902002", "grade=iii", "kind=alarm", "domain=traffic", "department=traffic"],
    )
    assert code == 0, err
    assert "district=339902" in out  # filled in from the street
    assert "reaches 1 route" in out
    assert "root/transport/nanmen-road-works -> transport-alertmanager (alertmanager" in out
    assert "group_wait 30s  group_interval 5m  repeat_interval 4h" in out
    assert (
        'group key root/transport/nanmen-road-works:{district="339902", street="339902002"}' in out
    )
    assert "MUTED now by nanmen-road-works-night" in out
    assert "grade III must be acknowledged within 1h" in out
    assert "district (district-duty-dingtalk) -> city (city-emergency-wecom)" in out


def test_routes_test_names_where_secrets_come_from_but_never_prints_them() -> None:
    code, out, _ = run_test_command(
        DEFAULT_CONFIG_DIR, ["grade=I", "department=fire", "district=339901", "kind=alarm"]
    )
    assert code == 0
    assert "reaches 3 routes" in out
    assert "secret from $CITYVITALS_NOTIFY_SECRET_FIRE" in out
    fire = load_routes(SHIPPED, CFG).receivers["fire-duty-dingtalk"].secret_value()
    assert fire and fire not in out  # the session's generated secret (tests/conftest.py)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (["district=999"], "unknown district '999'"),
        (["grade=V"], "unknown grade 'V'"),
        (["severity=high"], "unknown label 'severity'"),
        (["grade"], "write <label>=<value>"),
        (["grade=I", "grade=II"], "--label grade is given twice"),
        (["handler=fire"], "handler is derived"),
        (["co_departments=fire,nope"], "unknown department 'nope'"),
        (["district=339901", "street=339902001"], "is in district '339902', not '339901'"),
        (["rule=nope"], "unknown rule 'nope'"),
    ],
)
def test_routes_test_rejects_bad_labels(labels: list[str], message: str) -> None:
    code, out, err = run_test_command(DEFAULT_CONFIG_DIR, labels)
    assert code == 2 and out == ""
    assert "invalid labels" in err and message in err


def test_routes_test_rejects_bad_configuration(tmp_path: Path) -> None:
    for name in ("city.yaml", "indicators.yaml", "thresholds.yaml", "routes.yaml"):
        shutil.copy(DEFAULT_CONFIG_DIR / name, tmp_path / name)
    path = tmp_path / "routes.yaml"
    path.write_text(
        path.read_text(encoding="utf-8").replace("receiver: data-owners", "receiver: x")
    )
    code, out, err = run_test_command(tmp_path, ["grade=I"])
    assert code == 2 and out == ""
    assert "invalid configuration" in err and "unknown receiver 'x'" in err
    (tmp_path / "routes.yaml").unlink()
    code, _, err = run_test_command(tmp_path, ["grade=I"])
    assert code == 2 and "file not found" in err
    printed = io.StringIO()
    code = routes_test_command(
        tmp_path,
        ["grade=I"],
        routes_file=DEFAULT_CONFIG_DIR / "routes.yaml",
        out=Console(file=printed, width=200),
    )
    assert code == 0 and "root/city-emergency" in printed.getvalue()


def test_parse_labels_and_explain(routes_file: Path) -> None:
    tree = load_routes(routes_file, CFG)
    labels = parse_labels(["department=fire", "grade=II", "street=339901001"], CFG)
    assert labels == {
        "department": "fire",
        "district": "339901",
        "grade": "II",
        "street": "339901001",
    }
    text = explain(tree, labels, at=datetime(2026, 12, 8, 12, tzinfo=CST))
    assert "root/fire/severe -> fire (dingtalk, http://127.0.0.1:9901/fire, literal secret)" in text
    assert "at 2026-12-08 12:00:00+08:00 Asia/Shanghai" in text
    assert "grade II must be acknowledged within 15m" in text
    assert "street (the routes above) -> district (red) -> city (red)" in text
    assert "escalation" not in explain(tree, {"department": "fire"})  # no grade, no deadline


# --- property: the tree against an independent reading of the rules -----------------------

VOCAB: dict[str, list[str]] = {
    "grade": ["I", "II", "III", "IV"],
    "kind": ["warning", "alarm", "composite", "data_quality"],
    "department": ["fire", "traffic", "water", "environment"],
    "handler": ["fire", "traffic", "water", "environment"],
    "domain": ["fire", "traffic", "utilities", "environment"],
    "district": ["339901", "339902", "339903"],
}


@st.composite
def matchers(draw: st.DrawFn) -> str:
    name = draw(st.sampled_from(sorted(VOCAB)))
    values = VOCAB[name]
    op = draw(
        st.sampled_from(["!=", "=~", "!~"] if name == "district" else ["=", "!=", "=~", "!~"])
    )
    if op in ("=", "!="):
        return f"{name}{op}{draw(st.sampled_from(values))}"
    k = draw(st.integers(1, len(values) - 1))
    chosen = draw(st.permutations(values))[:k]
    return f'{name}{op}"{"|".join(chosen)}"'


def route_trees(depth: int) -> st.SearchStrategy[dict[str, Any]]:
    children = (
        st.lists(st.deferred(lambda: route_trees(depth + 1)), max_size=3)
        if depth < 3
        else st.just([])
    )
    return st.fixed_dictionaries(
        {
            "matchers": st.lists(matchers(), min_size=1, max_size=2),
            "continue": st.booleans(),
            "routes": children,
        },
        optional={"receiver": st.sampled_from(["a", "b", "c"])},
    )


def label_sets() -> st.SearchStrategy[dict[str, str]]:
    optional = {
        name: st.sampled_from(values)
        for name, values in VOCAB.items()
        if name not in ("handler", "department")
    }
    co = st.lists(st.sampled_from(VOCAB["department"]), min_size=1, max_size=2, unique=True)
    return st.fixed_dictionaries(
        {"department": st.sampled_from(VOCAB["department"])},
        optional={**optional, "co_departments": co.map(",".join)},
    )


def holds(matcher: str, labels: dict[str, str]) -> bool:
    """The documented semantics, written out without regular expressions."""
    parsed = re.match(r"(\w+)(=~|!~|!=|=)(.*)", matcher)
    assert parsed is not None
    name, op, value = parsed.groups()
    if name == "handler":
        have = {labels.get("department", "")} | set(
            filter(None, labels.get("co_departments", "").split(","))
        )
    else:
        have = {labels.get(name, "")}
    wanted = set(value.strip('"').split("|"))
    hit = bool(have & wanted)
    return hit if op in ("=", "=~") else not hit


def reference(
    node: dict[str, Any], labels: dict[str, str], path: str, receiver: str
) -> list[tuple[str, str]]:
    if not all(holds(m, labels) for m in node.get("matchers", [])):
        return []
    receiver = node.get("receiver", receiver)
    found: list[tuple[str, str]] = []
    for i, child in enumerate(node.get("routes", [])):
        hits = reference(child, labels, f"{path}/routes[{i}]", receiver)
        found += hits
        if hits and not child["continue"]:
            break
    return found or [(path, receiver)]


RECEIVERS = [{"name": n, "url": f"http://127.0.0.1:9901/{n}", "format": "native"} for n in "abc"]
ESCALATION = {
    "ack_deadlines": {"I": "5m", "II": "15m", "III": "1h", "IV": "4h"},
    "levels": {"street": "a", "district": "b", "city": "c"},
}


@settings(max_examples=80, deadline=None)
@given(
    routes=st.lists(route_trees(1), max_size=4),
    labels=st.lists(label_sets(), min_size=1, max_size=15),
)
def test_matching_agrees_with_an_independent_reading(
    tmp_path_factory: pytest.TempPathFactory,
    routes: list[dict[str, Any]],
    labels: list[dict[str, str]],
) -> None:
    root: dict[str, Any] = {"receiver": "a", "routes": routes}
    doc = {"version": 1, "receivers": RECEIVERS, "route": root, "escalation": ESCALATION}
    path = tmp_path_factory.mktemp("routes") / "routes.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    tree = load_routes(path, CFG)
    for ls in labels:
        got = [(r.path, r.receiver.name) for r in tree.match(ls)]
        assert got == reference(root, ls, "root", "a")
        # invariants: something always matches; nothing is reached twice; with no
        # top-level match the root applies; a matching route with continue is never dropped
        assert got and len({p for p, _ in got}) == len(got)
        top = [i for i, r in enumerate(routes) if all(holds(m, ls) for m in r["matchers"])]
        if not top:
            assert got == [("root", "a")]
        else:
            first_stop = next((i for i in top if not routes[i]["continue"]), None)
            for i in top:
                if first_stop is None or i <= first_stop:
                    assert any(
                        p == f"root/routes[{i}]" or p.startswith(f"root/routes[{i}]/")
                        for p, _ in got
                    )


# --- responder links ----------------------------------------------------------------------

LINKS = "responder_links:\n  ttl: 2h\n  key_env: CV_LINK_KEY\n"


def with_links(routes_file: Path, section: str) -> Path:
    text = routes_file.read_text(encoding="utf-8")
    routes_file.write_text(
        text.replace("receivers:\n", section + "receivers:\n", 1), encoding="utf-8"
    )
    return routes_file


def test_responder_links_take_their_key_from_the_environment(routes_file: Path) -> None:
    with_links(routes_file, LINKS + "  key: literal-key-for-tests-only-000000000\n")
    tree = load_routes(routes_file, CFG, environ={"CV_LINK_KEY": "e" * 40})
    signer = tree.responder_links
    assert signer is not None and signer.ttl_s == 7200
    token = signer.token(signer.grant("a-1", "339901", "fire", datetime(2026, 11, 24, tzinfo=UTC)))
    assert LinkSigner(b"e" * 40, 7200).verify(token, datetime(2026, 11, 24, tzinfo=UTC))
    literal = load_routes(routes_file, CFG, environ={}).responder_links
    assert literal is not None  # the literal key when the variable is unset
    at = datetime(2026, 11, 24, tzinfo=UTC)
    assert literal.token(literal.grant("a-1", "339901", "fire", at)) != token


def test_without_the_section_there_are_no_responder_links(routes_file: Path) -> None:
    assert load_routes(routes_file, CFG, environ={}).responder_links is None
    # the shipped file turns them on, with the key the session generated
    assert load_routes(SHIPPED, CFG).responder_links is not None


def test_a_receiver_may_opt_out_of_responder_links(routes_file: Path) -> None:
    text = routes_file.read_text(encoding="utf-8").replace(
        "    format: slack\n", "    format: slack\n    responder_links: false\n"
    )
    routes_file.write_text(text, encoding="utf-8")
    tree = load_routes(routes_file, CFG, environ={})
    assert not tree.receivers["env"].responder_links
    assert tree.receivers["fire"].responder_links


FIT = "x" * 32
UNSET = "is not set"
SHORT = "is 6 bytes, shorter than 32"
PLACEHOLDER = "is a known placeholder"


@pytest.mark.parametrize(
    ("entry", "environ", "reason", "set_by"),
    [
        ("secret_env: CV_FIRE", {}, UNSET, "CV_FIRE or CV_FIRE_FILE"),
        ("secret_env: CV_FIRE", {"CV_FIRE": "s3cret"}, SHORT, "CV_FIRE or CV_FIRE_FILE"),
        ("secret: s3cret", {}, SHORT, "receivers[1].secret in "),
        ("secret: demo-secret-change-me", {}, PLACEHOLDER, "receivers[1].secret in "),
        ("secret: " + "REPLACE-WITH-A-RANDOM-SECRET" * 2, {}, PLACEHOLDER, "receivers[1].secret"),
        ("secret_file: missing.key", {}, "cannot be read (", "the file "),
        ("secret_file: short.key", {}, SHORT, "the file "),
        ("secret_env: CV_FIRE", {"CV_FIRE_FILE": "/nonexistent/x"}, "cannot be read (", "CV_FIRE"),
        ("secret_env: CV_FIRE", {"CV_FIRE": FIT, "CV_FIRE_FILE": "x"}, "cannot be read (", "CV_"),
    ],
    ids=[
        "env-unset",
        "env-short",
        "literal-short",
        "literal-placeholder",
        "example-placeholder",
        "file-missing",
        "file-short",
        "env-file-missing",
        "env-set-twice",
    ],
)
def test_unfit_receiver_secrets_are_named_for_the_worker_to_refuse(
    routes_file: Path, entry: str, environ: dict[str, str], reason: str, set_by: str
) -> None:
    (routes_file.parent / "short.key").write_text("s3cret\n", encoding="utf-8")
    text = routes_file.read_text(encoding="utf-8")
    routes_file.write_text(text.replace("    secret: s3cret\n", f"    {entry}\n"), encoding="utf-8")
    tree = load_routes(routes_file, CFG, environ=environ)  # loads: only the worker refuses
    [problem] = tree.secret_problems
    assert problem.secret == "the signing secret of receiver fire"
    assert problem.reason.startswith(reason) and problem.set_by.startswith(set_by)
    for value in ("s3cret", "change-me", "REPLACE", FIT):
        assert value not in str(problem)


def test_a_secret_file_is_read_relative_to_the_routes_file(routes_file: Path) -> None:
    (routes_file.parent / "fire.key").write_text(FIT + "\n", encoding="utf-8")
    text = routes_file.read_text(encoding="utf-8")
    routes_file.write_text(text.replace("secret: s3cret", "secret_file: fire.key"), "utf-8")
    tree = load_routes(routes_file, CFG, environ={})
    assert tree.secret_problems == ()
    assert tree.receivers["fire"].secret_value() == FIT
    assert tree.receivers["fire"].secret_source == f"file:{routes_file.parent / 'fire.key'}"


def test_a_placeholder_in_a_receiver_url_is_named(routes_file: Path) -> None:
    text = routes_file.read_text(encoding="utf-8").replace("key=abc", "key=change-me")
    routes_file.write_text(text.replace("secret: s3cret", f"secret: {FIT}"), "utf-8")
    [problem] = load_routes(routes_file, CFG, environ={}).secret_problems
    assert str(problem).startswith("the url of receiver red holds a known placeholder")


@pytest.mark.parametrize(
    ("section", "environ", "reason"),
    [
        (LINKS, {}, UNSET),
        (LINKS, {"CV_LINK_KEY": "s3cret"}, SHORT),
        (LINKS, {"CV_LINK_KEY": "demo-responder-link-key-change-me-0000"}, PLACEHOLDER),
        ("responder_links:\n  key_file: link.key\n", {}, "cannot be read ("),
    ],
    ids=["env-unset", "short", "placeholder", "file-missing"],
)
def test_an_unfit_responder_link_key_is_named_and_signs_nothing(
    routes_file: Path, section: str, environ: dict[str, str], reason: str
) -> None:
    text = routes_file.read_text(encoding="utf-8").replace("secret: s3cret", f"secret: {FIT}")
    routes_file.write_text(text, encoding="utf-8")
    tree = load_routes(with_links(routes_file, section), CFG, environ=environ)
    [problem] = tree.secret_problems
    assert problem.secret == "the responder-link signing key"
    assert problem.reason.startswith(reason)
    assert tree.responder_links is None


def test_a_responder_link_key_from_a_file(routes_file: Path) -> None:
    (routes_file.parent / "link.key").write_text("k" * 40 + "\n", encoding="utf-8")
    with_links(routes_file, "responder_links:\n  key_file: link.key\n")
    tree = load_routes(routes_file, CFG, environ={})
    signer = tree.responder_links
    assert signer is not None
    at = datetime(2026, 11, 24, tzinfo=UTC)
    token = signer.token(signer.grant("a-1", "339901", "fire", at))
    assert LinkSigner(b"k" * 40, 3600).verify(token, at)


@pytest.mark.parametrize(
    ("section", "environ", "message"),
    [
        (
            "responder_links:\n  ttl: 2h\n",
            {},
            r"routes\.yaml:[34]: responder_links: responder links need a signing key",
        ),
        (
            "responder_links:\n  ttl: 10s\n  key: " + "k" * 32 + "\n",
            {},
            r"responder_links\.ttl: a responder link must live at least 60s, got 10s",
        ),
    ],
    ids=["no-key", "short-ttl"],
)
def test_invalid_responder_links_stop_start_up(
    routes_file: Path, section: str, environ: dict[str, str], message: str
) -> None:
    with_links(routes_file, section)
    with pytest.raises(ConfigError, match=message):
        load_routes(routes_file, CFG, environ=environ)
