"""``cityvitals alerts tail``: the live alert feed in a terminal.

Reads the API's live stream (``/api/v1/stream``) with the caller's token, so
the scopes are the server's; prints one line per alert event in the grade's
colour, and reconnects with ``Last-Event-ID`` after a dropped connection, a
worker restart or the server's ``overflow`` (it fell behind), so no event is
missed or shown twice. An operator's note is
shown with the event its action caused, the only event that carries it, so
every note appears once (its first line, cut to :data:`NOTE_CHARS`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from rich.console import Console
from rich.text import Text

from streams.alerting.lifecycle import inhibitor, is_closed
from streams.core.messages import GRADE_COLOURS, GRADE_COLOURS_ZH, AlertEvent, Grade

STYLE = {
    Grade.I: "bold white on red3",
    Grade.II: "bold black on dark_orange",
    Grade.III: "bold black on yellow",
    Grade.IV: "bold white on blue",
}
NOTE_CHARS = 120  # of a note's first line, on the event's line
WORD = {"zh": GRADE_COLOURS_ZH, "en": GRADE_COLOURS}


class TailRefused(Exception):
    """The API refused the token or the scope: status and reason."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"{status}: {detail}")
        self.status = status
        self.detail = detail


def render(event: AlertEvent, lang: str = "en", inhibited: bool = False) -> Text:
    """One line for one alert event; ``inhibited``: a red alert of its root is open."""
    local = event.last_update.astimezone()
    badge = f" {event.grade.roman:>3} {WORD[lang][event.grade]} "
    place = event.district + (f"/{event.street}" if event.street else "")
    headline = event.headline_zh if lang == "zh" else event.headline_en
    line = Text()
    line.append(f"{local:%m-%d %H:%M:%S} ")
    line.append(badge, style=STYLE[event.grade])
    line.append(f" {event.status.value:<8} {event.kind.value:<12} {place:<18} ")
    line.append(headline, style="bold")
    line.append(f"  [{event.workflow.value}]", style="dim")
    if event.actions:
        last = event.actions[-1]
        line.append(f"  {last.action} by {last.actor}", style="italic")
        if last.note:
            first = last.note.strip().splitlines()[0] if last.note.strip() else ""
            more = len(first) > NOTE_CHARS or first != last.note.strip()
            line.append(f": {first[:NOTE_CHARS]}{'…' if more else ''}", style="italic")
    if event.silenced_by or inhibited:
        line.append("  (muted)", style="dim")
    return line


@dataclass
class Tail:
    url: str
    token: str
    params: dict[str, Any] = field(default_factory=dict)
    last_event_id: str | None = None
    timeout_s: float = 30.0
    _failures: int = 0

    def events(self) -> Iterator[AlertEvent]:
        """Every alert event from the stream, resuming after dropped connections."""
        while True:
            yield from self._connect()

    def _connect(self) -> Iterator[AlertEvent]:
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "text/event-stream"}
        if self.last_event_id:
            headers["Last-Event-ID"] = self.last_event_id
        try:
            with httpx.stream(
                "GET",
                f"{self.url.rstrip('/')}/api/v1/stream",
                headers=headers,
                params=self.params,
                timeout=httpx.Timeout(10.0, read=self.timeout_s + 20.0),
            ) as response:
                if response.status_code in (401, 403):
                    response.read()
                    detail = response.json().get("detail", response.text)
                    raise TailRefused(response.status_code, detail)
                if response.status_code != 200:
                    response.read()
                    raise TailRefused(response.status_code, response.text[:300])
                # once connected, the stream resumes from the last id, not from the start
                self.params.pop("from_start", None)
                event_id, kind = None, "message"
                for line in response.iter_lines():
                    if line.startswith("id: "):
                        event_id = line[4:]
                    elif line.startswith("event: "):
                        kind = line[7:]
                    elif not line:
                        kind = "message"
                    elif line.startswith("data: ") and kind == "overflow":
                        # this client fell behind and the server ends the stream: the
                        # id is where to resume, at once
                        self.last_event_id = event_id or self.last_event_id
                    elif line.startswith("data: ") and kind in ("alert", "message"):
                        event = AlertEvent.model_validate(orjson.loads(line[6:]))
                        self.last_event_id = event_id or self.last_event_id
                        yield event
            self._failures = 0
        except (httpx.TransportError, httpx.RemoteProtocolError):
            # the worker restarts or the network drops: back off, then resume
            self._failures += 1
            time.sleep(min(10.0, 0.5 * 2 ** min(self._failures, 5)))


def run_tail(
    url: str,
    token: str,
    params: dict[str, Any],
    *,
    count: int | None,
    lang: str,
    console: Console,
) -> int:
    """Print the feed until Ctrl-C (or ``count`` events); 2 when the API refuses."""
    tail = Tail(url, token, params)
    shown = 0
    held: dict[str, AlertEvent] = {}  # the open alerts seen, for inhibition
    try:
        for event in tail.events():
            held.pop(event.alert_id, None)
            if not is_closed(event):
                held[event.alert_id] = event
            console.print(render(event, lang, inhibitor(event, held.values()) is not None))
            shown += 1
            if count is not None and shown >= count:
                return 0
    except TailRefused as exc:
        Console(stderr=True).print(f"[bold red]refused[/]: {exc}", highlight=False)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0
