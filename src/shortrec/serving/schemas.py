"""What the API accepts, and nothing else: strict types and documented ranges.

Anything stored is read back by every later request for that user (and after every restart),
so a value the feed cannot handle must be refused here, with a 4xx naming the field, rather
than stored: no bool or string coercion of ids and numbers, finite floats, times and
durations inside ranges a watch event can have. The events body is parsed by pydantic-core's
JSON parser, which refuses NaN/Infinity and JSON nested deeper than 200 levels.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Annotated

import pydantic_core
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from shortrec.serving.store import MAX_EVENT_ID_LENGTH, StoredEvent

MAX_ID = 2**63 - 1  # ids are stored as signed 64-bit integers
MIN_TIMESTAMP = 946_684_800.0  # 2000-01-01T00:00:00Z
MAX_TIMESTAMP = 4_102_444_800.0  # 2100-01-01T00:00:00Z
MAX_WATCH_RATIO = 1_000.0  # KuaiRec's largest is ~573 (a short video looped for minutes)
MAX_DURATION_MS = 86_400_000  # one day, in milliseconds
MAX_EVENTS_PER_REQUEST = 10_000
KUAIREC_TIMEZONE = timezone(timedelta(hours=8))  # KuaiRec's `time` is Asia/Shanghai, no DST
EVENT_ID_PATTERN = rf"^[A-Za-z0-9._:-]{{1,{MAX_EVENT_ID_LENGTH}}}$"

Id = Annotated[int, Field(strict=True, ge=0, le=MAX_ID)]
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}")


def _decimal(value: object) -> object:
    """A path or query integer written as plain decimal digits, as a JSON integer is: no
    sign, no '23.0', no '1_000', no leading zeros (which int() and pydantic would accept)."""
    if isinstance(value, str):
        if not _DECIMAL.fullmatch(value):
            raise ValueError("must be a non-negative integer in plain decimal digits")
        return int(value)
    return value


DecimalInt = Annotated[int, BeforeValidator(_decimal)]
Duration = Annotated[int, Field(strict=True, ge=0, le=MAX_DURATION_MS, description="ms")]


class WatchEvent(BaseModel):
    """One view. Give `watch_ratio`, or `play_duration` and `video_duration` (ms). The time is
    `timestamp` (unix seconds) or `time` (ISO 8601; without an offset it is KuaiRec's
    Asia/Shanghai time); without either, the time the server received it. Times must lie in
    2000-01-01 .. 2100-01-01 UTC. A KuaiRec row (with its `date`) is accepted as it is. With an
    `event_id` (1-128 characters of A-Z a-z 0-9 . _ : -, unique per store) a retried event is
    stored once and answered like the first time."""

    model_config = ConfigDict(extra="forbid", strict=True)

    user_id: Id
    video_id: Id
    watch_ratio: float | None = Field(default=None, ge=0, le=MAX_WATCH_RATIO, allow_inf_nan=False)
    play_duration: Duration | None = None
    video_duration: Duration | None = None
    timestamp: float | None = Field(
        default=None, ge=MIN_TIMESTAMP, lt=MAX_TIMESTAMP, allow_inf_nan=False
    )
    time: str | None = Field(default=None, max_length=64, examples=["2020-07-05 05:27:48.378"])
    date: int | float | None = Field(
        default=None, ge=0, le=99_991_231, allow_inf_nan=False,
        description="ignored (KuaiRec's yyyymmdd)",
    )  # fmt: skip
    event_id: str | None = Field(default=None, pattern=EVENT_ID_PATTERN)

    @model_validator(mode="after")
    def _check(self) -> WatchEvent:
        if self.watch_ratio is None:
            if self.play_duration is None or not self.video_duration:  # video_duration > 0
                raise ValueError(
                    "give watch_ratio (>= 0), or play_duration and video_duration (> 0) in ms"
                )
            if self.play_duration / self.video_duration > MAX_WATCH_RATIO:
                raise ValueError(f"play_duration / video_duration is over {MAX_WATCH_RATIO:g}")
        if self.time is not None:
            self.time_as_timestamp()  # raises ValueError when unreadable or out of range
        return self

    def time_as_timestamp(self) -> float:
        try:
            moment = datetime.fromisoformat(self.time)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=KUAIREC_TIMEZONE)
            timestamp = moment.timestamp()
        except (ValueError, OverflowError, OSError):
            raise ValueError(f"time {self.time!r} is not an ISO 8601 time") from None
        if not MIN_TIMESTAMP <= timestamp < MAX_TIMESTAMP:
            raise ValueError(f"time {self.time!r} is outside 2000-01-01 .. 2100-01-01 UTC")
        return timestamp

    def stored(self, received_at: float) -> StoredEvent:
        ratio = self.watch_ratio
        if ratio is None:
            ratio = self.play_duration / self.video_duration  # checked > 0 above
        if self.timestamp is not None:
            timestamp = self.timestamp
        elif self.time is not None:
            timestamp = self.time_as_timestamp()
        else:
            timestamp = received_at
        return StoredEvent(
            user_id=self.user_id,
            video_id=self.video_id,
            watch_ratio=float(ratio),
            play_duration=self.play_duration,
            video_duration=self.video_duration,
            timestamp=float(timestamp),
            event_id=self.event_id,
        )


class ModelSwap(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    run_dir: str = Field(
        min_length=1,
        max_length=1024,
        description="a run directory written by `shortrec train`, relative to the runs root",
    )


_EVENTS = TypeAdapter(list[WatchEvent])


@dataclass(frozen=True)
class TimeWindow:
    """The event times a server accepts: up to `max_future_seconds` ahead of its clock (a
    client clock running a little fast is fine, a date in 2099 is not) and, when
    `max_age_seconds` is set, no older than that. Events without a time get the server's."""

    max_future_seconds: float = 600.0
    max_age_seconds: float | None = None

    def problem(self, event: WatchEvent, now: float) -> tuple[str, str] | None:
        """(field, message) when the event's time is outside the window."""
        if event.timestamp is not None:
            field, timestamp = "timestamp", event.timestamp
        elif event.time is not None:
            field, timestamp = "time", event.time_as_timestamp()
        else:
            return None
        if timestamp > now + self.max_future_seconds:
            return field, (
                f"{timestamp - now:.0f} s ahead of the server clock (at most "
                f"{self.max_future_seconds:g} s): send the time of the view in UTC, or leave "
                "it out to use the time the server receives it"
            )
        if self.max_age_seconds is not None and timestamp < now - self.max_age_seconds:
            return field, f"{now - timestamp:.0f} s old (at most {self.max_age_seconds:g} s)"
        return None


class InvalidInput(Exception):
    """Bad input found outside FastAPI's own validation (the events body): answered as 422."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{e['location']}: {e['message']}" for e in errors))
        self.errors = errors


def location(loc: tuple | list) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "request"


def error_list(errors: list[dict], prefix: tuple = ()) -> list[dict[str, str]]:
    # Only location and message: `input`/`ctx` may hold bytes or exceptions JSON can't encode.
    return [
        {
            "location": location((*prefix, *error.get("loc", ()))),
            "message": str(error["msg"]).removeprefix("Value error, "),
        }
        for error in errors
    ]


def parse_events(
    body: bytes, window: TimeWindow | None = None, now: float | None = None
) -> list[WatchEvent]:
    """A JSON event, a JSON list of events, or {"events": [...]}, each dated inside `window`
    around `now` (default: the clock) when a window is given."""
    try:
        payload = pydantic_core.from_json(body, allow_inf_nan=False)
    except ValueError as error:
        raise InvalidInput([{"location": "body", "message": f"not valid JSON: {error}"}]) from None
    if isinstance(payload, dict) and "events" in payload:
        if set(payload) != {"events"}:
            extra = sorted(set(payload) - {"events"})[:5]
            raise InvalidInput([{"location": "body", "message": f"unexpected fields {extra}"}])
        items, prefix = payload["events"], ("body", "events")
    elif isinstance(payload, dict):
        items, prefix = [payload], ("body",)
    else:
        items, prefix = payload, ("body",)
    if not isinstance(items, list):
        raise InvalidInput(
            [
                {
                    "location": location(prefix),
                    "message": 'expected an event, a list of events or {"events": [...]}',
                }
            ]  # fmt: skip
        )
    if not items:
        raise InvalidInput([{"location": location(prefix), "message": "no events"}])
    if len(items) > MAX_EVENTS_PER_REQUEST:
        raise InvalidInput(
            [{"location": location(prefix),
              "message": f"{len(items)} events; at most {MAX_EVENTS_PER_REQUEST} per request"}]
        )  # fmt: skip
    try:
        events = _EVENTS.validate_python(items)
    except ValidationError as error:
        if prefix == ("body",) and isinstance(payload, dict):
            # A single event: drop the list index pydantic adds.
            errors = [{**e, "loc": e["loc"][1:]} for e in error.errors()]
            raise InvalidInput(error_list(errors, prefix)) from None
        raise InvalidInput(error_list(error.errors(), prefix)) from None
    ids = [event.event_id for event in events if event.event_id is not None]
    if len(set(ids)) != len(ids):
        raise InvalidInput([{"location": location(prefix), "message": "repeated event_id"}])
    if window is not None:
        now = time.time() if now is None else now
        single = prefix == ("body",) and isinstance(payload, dict)
        errors = [
            {"location": location((*prefix, field) if single else (*prefix, i, field)),
             "message": message}
            for i, event in enumerate(events)
            if (found := window.problem(event, now)) is not None
            for field, message in [found]
        ]  # fmt: skip
        if errors:
            raise InvalidInput(errors)
    return events
