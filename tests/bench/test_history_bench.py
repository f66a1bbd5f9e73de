"""bench/history.py: the history it writes has the demo city's rates and its record times."""

from __future__ import annotations

import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import history  # noqa: E402

from streams.api.history import alert_head  # noqa: E402
from streams.core.messages import (  # noqa: E402
    ALERTS_TOPIC,
    AUDIT_TOPIC,
    VITALS_TOPIC,
    AlertEvent,
    AuditRecord,
)

NOW = datetime(2026, 12, 1, 12, 0, 30, tzinfo=UTC)


def test_a_year_of_history_has_the_planned_records_stamped_with_their_times() -> None:
    years, vitals_years = 0.02, 0.001  # a week of alerts and audit, 525 minutes of vitals
    records = list(history.history(years, vitals_years, 85.0, 3, NOW))
    counts = Counter(topic for topic, *_ in records)
    alerts = int(years * 365 * 85.0 / 3)
    assert counts == {
        ALERTS_TOPIC: 3 * alerts - 1 + 6,  # the first never closes; 3 open in the last hour
        AUDIT_TOPIC: 3 * alerts - 1,
        VITALS_TOPIC: 525 * 10,
    }
    assert history.planned(years, vitals_years, 85.0, 3) == 6 * alerts + 525 * 10
    for topic in counts:
        times = [at for t, _, at, _ in records if t == topic]
        assert times == sorted(times), f"{topic}: record times follow the order written"
        assert NOW - timedelta(days=365 * years) <= times[0] and times[-1] <= NOW
    # every record is what a worker would have written, keyed as it would
    opened: dict[str, bool] = {}
    for topic, key, at, doc in records:
        if topic == ALERTS_TOPIC:
            event = AlertEvent.model_validate(doc)
            assert key == event.district and at == event.last_update
            opened[event.alert_id] = not alert_head(event.to_json()).closed
        elif topic == AUDIT_TOPIC:
            assert AuditRecord.model_validate(doc).at == at
        else:
            assert doc["window_end"] == at.isoformat().replace("+00:00", "Z")
            assert key == doc["district"]
    assert sum(opened.values()) == 4, "the very first alert and the last hour's three"
