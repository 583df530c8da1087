"""Types shared by several kinds: references, quantities, durations, conditions."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any

from pydantic import AfterValidator, Field, WithJsonSchema

from virtrigaud.api.base import ApiModel, cel, validations

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"

ObjectName = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)]
NamespaceName = Annotated[str, Field(min_length=1, max_length=63, pattern=DNS_LABEL)]
ShortText = Annotated[str, Field(max_length=255)]

LabelValue = Annotated[str, Field(max_length=63)]
Labels = Annotated[dict[str, LabelValue], Field(max_length=64)]
Annotations = Annotated[dict[str, Annotated[str, Field(max_length=4096)]], Field(max_length=64)]


class LocalObjectReference(ApiModel):
    """A reference to an object in the same namespace."""

    name: ObjectName
    """Name of the referenced object."""


class ObjectRef(ApiModel):
    """A reference to an object, by default in the referrer's namespace."""

    name: ObjectName
    """Name of the referenced object."""
    namespace: NamespaceName | None = None
    """Namespace of the referenced object; unset means the referrer's own namespace."""


# --- Resource quantities ("4Gi", "512Mi", 4096) -------------------------------------------

_QUANTITY_RE = re.compile(
    r"^(?P<num>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?P<suffix>[KMGTPE]i|[numkMGTPE]|[eE][+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))?$"
)
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}


def parse_quantity(value: int | str) -> Decimal:
    """A Kubernetes resource quantity as a number (bytes for memory)."""
    if isinstance(value, int):
        return Decimal(value)
    match = _QUANTITY_RE.match(value.strip())
    if match is None:
        raise ValueError(
            f"{value!r} is not a Kubernetes quantity: write e.g. 4Gi, 512Mi, 2G or 4096"
        )
    number, suffix = Decimal(match["num"]), match["suffix"] or ""
    if suffix in _BINARY:
        return number * (Decimal(1024) ** _BINARY[suffix])
    if suffix in _DECIMAL:
        return number * (Decimal(10) ** _DECIMAL[suffix])
    return number * (Decimal(10) ** int(suffix[1:]))


def quantity_to_mib(value: int | str) -> int:
    """A memory quantity in whole MiB, rounded up."""
    mib = parse_quantity(value) / (1024 * 1024)
    return int(mib.to_integral_value(rounding="ROUND_CEILING"))


def _check_quantity(value: int | str) -> int | str:
    parse_quantity(value)
    return value


Quantity = Annotated[
    int | str,
    AfterValidator(_check_quantity),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": True,
        }
    ),
]
"""A Kubernetes resource quantity, as the API accepts it: an integer or a string like "4Gi"."""

# A malformed quantity is reported by the schema's pattern; the rule stays silent on it rather
# than adding a CEL evaluation error to the same field.
POSITIVE_QUANTITY_RULE = (
    "!isQuantity(string(self)) || quantity(string(self)).isGreaterThan(quantity('0'))"
)

# --- Durations ("30s", "1h30m") ------------------------------------------------------------

DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|µs|ms|s|m|h)")
_DURATION_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}

DURATION_MESSAGE = "must be a duration such as 30s, 5m or 1h30m (units ns, us, ms, s, m, h)"


def parse_duration(value: str) -> timedelta:
    """A Go-style duration string as a timedelta."""
    if not re.fullmatch(DURATION_PATTERN, value):
        raise ValueError(f"{value!r} {DURATION_MESSAGE}")
    seconds = sum(
        float(n) * _DURATION_UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(value)
    )
    return timedelta(seconds=seconds)


def matching(pattern: str, message: str) -> list[Any]:
    """A regex check that says how to fix a mismatch, on both sides of the API.

    A schema `pattern` makes the API server answer "should match '<regex>'"; a CEL rule
    can carry a message. Returns Annotated metadata: the CEL rule for the CRD and a Python
    validator with the same message for the models.
    """
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.search(value):
            raise ValueError(f"{value!r} {message}")
        return value

    return [
        Field(json_schema_extra=validations(cel(f"self.matches(r'{pattern}')", message))),
        AfterValidator(check),
    ]


Duration = Annotated[str, Field(max_length=64), *matching(DURATION_PATTERN, DURATION_MESSAGE)]
"""A Go-style duration string, as metav1.Duration serialises it: "30s", "5m", "1h30m"."""


IntOrString = Annotated[
    int | str,
    Field(union_mode="left_to_right"),
    WithJsonSchema(
        {"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": True}
    ),
]
"""A number or a name, as Kubernetes' intstr.IntOrString (e.g. a port: 8080 or "http")."""


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"
