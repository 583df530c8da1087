"""When a snapshot schedule fires, and which snapshots retention removes: pure functions of
the spec and a clock, so the whole policy is testable without waiting for wall time.

Cron is read like Vixie cron: five fields (minute hour day-of-month month day-of-week, 0 and
7 both Sunday) in the schedule's IANA time zone; when both day fields are restricted a day
matching either one fires. The expressions that reach here passed the API's pattern
(virtrigaud/api/cron.py); what the pattern cannot see (a range running backwards, a date
that never exists such as 30 February) is a ``ScheduleError`` naming the field.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

CRON_FIELD = "spec.schedule.cronSpec"
TIMEZONE_FIELD = "spec.schedule.timezone"

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
_BOUNDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_NAMES: tuple[dict[str, int], ...] = (
    {},
    {},
    {},
    {m: i + 1 for i, m in enumerate(_MONTHS)},
    {d: i for i, d in enumerate(_DAYS)},
)
_FIELD_NAMES = ("minute", "hour", "day-of-month", "month", "day-of-week")
# Far enough for any expression that fires at all (29 February of a leap year, a weekday
# rule on 29 February): a search that ends empty means it never fires.
_SEARCH_DAYS = 366 * 8 + 2


class ScheduleError(ValueError):
    """The schedule cannot work as written; ``field`` names the spec field to fix."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True)
class Cron:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    days_restricted: bool
    weekdays_restricted: bool
    zone: ZoneInfo

    def matches_day(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        in_days = day.day in self.days
        in_weekdays = (day.isoweekday() % 7) in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return in_days or in_weekdays
        return in_days and in_weekdays

    def next_after(self, after: datetime) -> datetime:
        """The first firing strictly after ``after`` (an aware datetime), in UTC."""
        local = after.astimezone(self.zone).replace(second=0, microsecond=0, tzinfo=None)
        day = local.date()
        for _ in range(_SEARCH_DAYS):
            if self.matches_day(day):
                for hour in sorted(self.hours):
                    for minute in sorted(self.minutes):
                        wall = datetime(day.year, day.month, day.day, hour, minute)
                        fire = wall.replace(tzinfo=self.zone).astimezone(UTC)
                        if fire > after:
                            return fire
            day += timedelta(days=1)
        raise ScheduleError(CRON_FIELD, "the expression never fires (no such date exists)")

    def last_at_or_before(self, now: datetime, since: datetime) -> datetime | None:
        """The latest firing in (since, now], or None: what a schedule owes at ``now``."""
        fire = self.next_after(since)
        if fire > now:
            return None
        # Catch up in one step: only the latest missed firing counts (like a CronJob that
        # missed runs while its controller was away).
        while True:
            following = self.next_after(fire)
            if following > now:
                return fire
            fire = following


def _parse_field(text: str, index: int) -> tuple[frozenset[int], bool]:
    low, high = _BOUNDS[index]
    names = _NAMES[index]
    values: set[int] = set()

    def number(token: str) -> int:
        value = names.get(token.lower()) if token.isalpha() else int(token)
        if value is None or not low <= value <= high:
            raise ScheduleError(
                CRON_FIELD, f"{token!r} is out of range for the {_FIELD_NAMES[index]} field"
            )
        return value

    for item in text.split(","):
        body, _, step_text = item.partition("/")
        step = int(step_text) if step_text else 1
        if body == "*":
            start, end = low, high
        elif "-" in body:
            a, b = body.split("-", 1)
            start, end = number(a), number(b)
            if start > end:
                raise ScheduleError(
                    CRON_FIELD,
                    f"range {body!r} of the {_FIELD_NAMES[index]} field runs backwards",
                )
        else:
            start = number(body)
            end = high if step_text else start
        values.update(range(start, end + 1, step))
    if index == 4 and 7 in values:
        values.discard(7)
        values.add(0)
    return frozenset(values), text != "*"


def parse_cron(expression: str, timezone: str = "UTC") -> Cron:
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ScheduleError(
            TIMEZONE_FIELD, f"{timezone!r} is not an IANA time zone (e.g. UTC, Europe/Riga)"
        ) from e
    text = _MACROS.get(expression.strip().lower(), expression.strip())
    fields = re.split(r"\s+", text)
    if len(fields) != 5:
        raise ScheduleError(
            CRON_FIELD,
            f"{expression!r} is not a 5-field cron expression "
            "(minute hour day-of-month month day-of-week), e.g. '0 2 * * *'",
        )
    try:
        parsed = [_parse_field(f, i) for i, f in enumerate(fields)]
    except ValueError as e:
        if isinstance(e, ScheduleError):
            raise
        raise ScheduleError(CRON_FIELD, f"{expression!r} is not a cron expression: {e}") from e
    cron = Cron(
        minutes=parsed[0][0],
        hours=parsed[1][0],
        days=parsed[2][0],
        months=parsed[3][0],
        weekdays=parsed[4][0],
        days_restricted=parsed[2][1],
        weekdays_restricted=parsed[4][1],
        zone=zone,
    )
    cron.next_after(datetime(2000, 1, 1, tzinfo=UTC))  # never fires: ScheduleError now
    return cron


# --------------------------------------------------------------------------- retention


@dataclass(frozen=True)
class Taken:
    """One snapshot a schedule took, as retention sees it."""

    name: str
    created: datetime
    pinned: bool = False


def over_count(
    taken: Iterable[Taken], max_count: int | None, *, preserve_pinned: bool
) -> list[str]:
    """Names of the oldest snapshots beyond ``max_count`` (pinned ones are neither deleted
    nor counted when preserve_pinned), oldest first."""
    if max_count is None:
        return []
    counted = sorted(
        (t for t in taken if not (preserve_pinned and t.pinned)),
        key=lambda t: (t.created, t.name),
    )
    excess = len(counted) - max_count
    return [t.name for t in counted[:excess]] if excess > 0 else []


@dataclass(frozen=True)
class Expiry:
    expires: datetime | None  # when the snapshot counts as expired
    delete_at: datetime | None  # when retention deletes it (expiry plus the grace period)

    def expired(self, now: datetime) -> bool:
        return self.expires is not None and now >= self.expires

    def due(self, now: datetime) -> bool:
        return self.delete_at is not None and now >= self.delete_at


def expiry_of(
    created: datetime | None,
    max_age: timedelta | None,
    grace: timedelta,
    *,
    pinned: bool,
    preserve_pinned: bool,
) -> Expiry:
    if created is None or max_age is None or (pinned and preserve_pinned):
        return Expiry(None, None)
    expires = created + max_age
    return Expiry(expires, expires + grace)


def seconds_until(moments: Sequence[datetime | None], now: datetime) -> float | None:
    """Seconds to the earliest future moment (at least one second), None when none."""
    future = [(m - now).total_seconds() for m in moments if m is not None]
    if not future:
        return None
    return max(1.0, min(future))
