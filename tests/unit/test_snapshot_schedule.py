"""Cron firing and snapshot retention, on a fake clock (controllers/vmsnapshot/schedule.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from virtrigaud.controllers.vmsnapshot.schedule import (
    ScheduleError,
    Taken,
    expiry_of,
    over_count,
    parse_cron,
)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("* * * * *", "2026-12-03 11:45:30", "2026-12-03 11:46:00"),
        ("*/15 * * * *", "2026-12-03 11:45:00", "2026-12-03 12:00:00"),
        ("0 2 * * *", "2026-12-03 02:00:00", "2026-12-04 02:00:00"),
        ("30 1 1 * *", "2026-12-03 00:00:00", "2027-01-01 01:30:00"),
        ("0 0 * * sun", "2026-12-03 00:00:00", "2026-12-06 00:00:00"),  # a Thursday
        ("0 0 * * 7", "2026-12-03 00:00:00", "2026-12-06 00:00:00"),
        ("0 9-17/4 * * MON-FRI", "2026-12-04 17:01:00", "2026-12-07 09:00:00"),
        # Both day fields restricted: either one matching fires (the 13th, or a Friday).
        ("0 0 13 * 5", "2026-12-03 00:00:00", "2026-12-04 00:00:00"),
        ("0 0 29 2 *", "2026-03-01 00:00:00", "2028-02-29 00:00:00"),
        ("@hourly", "2026-12-03 11:00:00", "2026-12-03 12:00:00"),
        ("@daily", "2026-12-03 11:00:00", "2026-12-04 00:00:00"),
    ],
)
def test_next_firing(expression: str, after: str, expected: str) -> None:
    assert parse_cron(expression).next_after(at(after)) == at(expected)


def test_time_zone() -> None:
    cron = parse_cron("0 2 * * *", "Europe/Riga")  # UTC+2 in winter
    assert cron.next_after(at("2026-12-03 00:30:00")) == at("2026-12-04 00:00:00")


@pytest.mark.parametrize(
    ("expression", "timezone", "field", "words"),
    [
        ("* * * *", "UTC", "spec.schedule.cronSpec", "5-field"),
        ("0 0 30 2 *", "UTC", "spec.schedule.cronSpec", "never fires"),
        ("5-1 * * * *", "UTC", "spec.schedule.cronSpec", "runs backwards"),
        ("0 0 * * *", "Mars/Olympus", "spec.schedule.timezone", "IANA"),
    ],
)
def test_bad_schedules_name_the_field(
    expression: str, timezone: str, field: str, words: str
) -> None:
    with pytest.raises(ScheduleError) as err:
        parse_cron(expression, timezone)
    assert err.value.field == field
    assert words in str(err.value)


def test_every_minute_for_five_minutes_keeps_three() -> None:
    """What the schedule does, pass by pass, with the clock stepping 70 s at a time: one
    snapshot per firing (a late pass catches up with the latest firing only), and never
    more than maxCount=3 kept, the newest ones."""
    cron = parse_cron("* * * * *")
    start = at("2026-12-03 10:00:10")
    since = start
    kept: list[Taken] = []
    fired: list[datetime] = []
    now = start
    while now < start + timedelta(minutes=5):
        now += timedelta(seconds=70)
        due = cron.last_at_or_before(now, since)
        if due is not None:
            fired.append(due)
            kept.append(Taken(f"s-{due:%H%M}", due))
            since = due
        dropped = set(over_count(kept, 3, preserve_pinned=True))
        kept = [t for t in kept if t.name not in dropped]
        assert len(kept) <= 3
    # Passes at 10:01:20, 10:02:30, 10:03:40, 10:04:50, 10:06:00: the last one owes both
    # 10:05 and 10:06 and takes only 10:06.
    assert [f"{f:%H:%M}" for f in fired] == ["10:01", "10:02", "10:03", "10:04", "10:06"]
    assert [t.name for t in kept] == [f"s-{f:%H%M}" for f in fired[-3:]]


def test_late_pass_takes_only_the_latest_missed_firing() -> None:
    cron = parse_cron("*/5 * * * *")
    assert cron.last_at_or_before(at("2026-12-03 10:27:00"), at("2026-12-03 10:01:00")) == at(
        "2026-12-03 10:25:00"
    )
    assert cron.last_at_or_before(at("2026-12-03 10:04:00"), at("2026-12-03 10:01:00")) is None


def test_max_count_skips_pinned_and_deletes_oldest_first() -> None:
    base = at("2026-12-03 00:00:00")
    taken = [Taken(f"s{i}", base + timedelta(hours=i), pinned=(i == 0)) for i in range(5)]
    assert over_count(taken, 2, preserve_pinned=True) == ["s1", "s2"]
    assert over_count(taken, 2, preserve_pinned=False) == ["s0", "s1", "s2"]
    assert over_count(taken, 10, preserve_pinned=True) == []
    assert over_count(taken, None, preserve_pinned=True) == []


def test_max_age_expires_then_deletes_after_grace() -> None:
    created = at("2026-12-03 00:00:00")
    exp = expiry_of(
        created, timedelta(hours=1), timedelta(minutes=30), pinned=False, preserve_pinned=True
    )
    assert not exp.expired(created + timedelta(minutes=59))
    assert exp.expired(created + timedelta(hours=1)) and not exp.due(created + timedelta(hours=1))
    assert exp.due(created + timedelta(minutes=90))
    pinned = expiry_of(created, timedelta(hours=1), timedelta(0), pinned=True, preserve_pinned=True)
    assert not pinned.expired(created + timedelta(days=365))
