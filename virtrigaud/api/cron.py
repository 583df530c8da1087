"""The cron expressions the API accepts: one regex, used by the CRD's CEL rule and by Python.

Five fields (minute hour day-of-month month day-of-week), each a comma list of `*`, a value
or a range, optionally with a `/step`; month and weekday names in any case; or one of the
usual macros. Value ranges are checked per field so that `61 * * * *` is refused at admission
rather than at the first scheduling attempt.
"""

from __future__ import annotations

import re

_MONTHS = "jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec"
_DAYS = "sun|mon|tue|wed|thu|fri|sat"
_MACROS = "@(yearly|annually|monthly|weekly|daily|midnight|hourly)"


def _field(value: str) -> str:
    item = rf"(\*|({value})(-({value}))?)(/[1-9][0-9]?)?"
    return rf"{item}(,{item})*"


CRON_PATTERN = (
    "^("
    + " +".join(
        _field(v)
        for v in (
            r"[0-5]?[0-9]",
            r"[01]?[0-9]|2[0-3]",
            r"0?[1-9]|[12][0-9]|3[01]",
            rf"0?[1-9]|1[0-2]|(?i:{_MONTHS})",
            rf"[0-7]|(?i:{_DAYS})",
        )
    )
    + f"|{_MACROS})$"
)
CRON_MAX_LENGTH = 128

_CRON_RE = re.compile(CRON_PATTERN)


def is_valid_cron(expression: str) -> bool:
    return len(expression) <= CRON_MAX_LENGTH and _CRON_RE.match(expression) is not None


def check_cron(expression: str) -> str:
    """Pydantic validator: the same check the API server applies."""
    if not is_valid_cron(expression):
        raise ValueError(
            f"{expression!r} is not a 5-field cron expression: write e.g. '0 2 * * *' "
            "(minute hour day-of-month month day-of-week) or a macro such as @daily"
        )
    return expression
