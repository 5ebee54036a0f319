"""The timer trigger: NCRONTAB schedules (six fields, seconds first), as the Functions host runs them.

``{second} {minute} {hour} {day} {month} {day-of-week}``; each field is ``*``, a number, a range
``a-b``, a list ``a,b`` or a step ``*/n`` / ``a-b/n``. The schedule may name an app setting
(``%DICOM_EXPIRY_SCHEDULE%``), resolved like other binding expressions. Times are UTC (the host's
default without ``WEBSITE_TIME_ZONE``). A run that is late by more than a schedule period is reported
to the function as ``past_due``; missed runs are not repeated (one run catches up, as the host does).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from .config import resolve_settings
from .functions import UserFunction
from .triggers import TriggerDriver, trigger_driver

if TYPE_CHECKING:
    from .host import LocalHost

log = logging.getLogger("scripts.localhost")

#: (lowest, highest) of each NCRONTAB field.
_FIELDS = ((0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 6))


def _field(text: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        body, _, step_text = item.partition("/")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(f"bad step in {item!r}")
        if body == "*":
            start, end = low, high
        elif "-" in body:
            a, b = body.split("-", 1)
            start, end = int(a), int(b)
        else:
            start = int(body)
            end = high if step_text else start
        if not (low <= start <= end <= high):
            raise ValueError(f"{item!r} is outside {low}-{high}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


class Schedule:
    """A parsed six-field NCRONTAB expression."""

    def __init__(self, expression: str) -> None:
        parts = expression.split()
        if len(parts) != 6:
            raise ValueError(f"NCRONTAB needs 6 fields (seconds first), got {expression!r}")
        try:
            self.fields = [_field(p, low, high) for p, (low, high) in zip(parts, _FIELDS, strict=True)]
        except ValueError as exc:
            raise ValueError(f"bad NCRONTAB expression {expression!r}: {exc}") from None
        self.expression = expression

    def matches(self, t: datetime) -> bool:
        second, minute, hour, day, month, weekday = self.fields
        cron_weekday = (t.weekday() + 1) % 7  # NCRONTAB: 0 = Sunday
        return (
            t.second in second
            and t.minute in minute
            and t.hour in hour
            and t.day in day
            and t.month in month
            and cron_weekday in weekday
        )

    def next_after(self, t: datetime) -> datetime:
        """The first matching second strictly after ``t`` (searched up to a year ahead)."""
        candidate = t.replace(microsecond=0) + timedelta(seconds=1)
        limit = candidate + timedelta(days=366)
        while candidate < limit:
            if candidate.month not in self.fields[4] or candidate.day not in self.fields[3]:
                candidate = (candidate + timedelta(days=1)).replace(hour=0, minute=0, second=0)
                continue
            if candidate.hour not in self.fields[2]:
                candidate = (candidate + timedelta(hours=1)).replace(minute=0, second=0)
                continue
            if candidate.minute not in self.fields[1]:
                candidate = (candidate + timedelta(minutes=1)).replace(second=0)
                continue
            if self.matches(candidate):
                return candidate
            candidate += timedelta(seconds=1)
        raise ValueError(f"the schedule {self.expression!r} never fires")


@trigger_driver
class TimerDriver(TriggerDriver):
    """Invokes its function when its schedule is due."""

    binding = "timerTrigger"

    def __init__(self, host: LocalHost, function: UserFunction, schedule: Schedule, run_on_startup: bool) -> None:
        super().__init__(host, function)
        self.schedule = schedule
        now = datetime.now(UTC)
        self.due = now if run_on_startup else schedule.next_after(now)

    @classmethod
    def create(cls, host: LocalHost, function: UserFunction, trigger: Any) -> TriggerDriver:
        expression = resolve_settings(str(trigger.schedule), host.environ)
        return cls(host, function, Schedule(expression), bool(getattr(trigger, "run_on_startup", False)))

    def describe(self) -> str:
        return f"timer: {self.schedule.expression}"

    def poll_once(self) -> int:
        from azure.functions.timer import TimerRequest

        now = datetime.now(UTC)
        if now < self.due:
            return 0
        following = self.schedule.next_after(self.due)
        past_due = now > following
        self.due = self.schedule.next_after(now)
        try:
            self.invoke(TimerRequest(past_due=past_due))
        except Exception:  # noqa: BLE001 - logged by invoke; the next occurrence runs as scheduled
            log.exception("timer function %s failed", self.name)
        return 1

    def next_delay(self, handled: int, previous: float) -> float:
        wait = (self.due - datetime.now(UTC)).total_seconds()
        return max(0.05, min(wait, 5.0))
