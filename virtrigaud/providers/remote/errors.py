"""Error kinds across the wire: a ProviderError becomes a gRPC status and back.

The status code alone already says the kind to any gRPC peer (NOT_FOUND, INVALID_ARGUMENT /
FAILED_PRECONDITION for a terminal error, UNAVAILABLE for a retryable one); our trailers
add the exact kind, the condition reason (``NotOwned``), the field and the retry delay.
Failures of the transport itself (server down, deadline, refused handshake, garbage) carry
no such trailer: they are Retryable, like an unreachable hypervisor, and they are what the
circuit breaker counts.
"""

from __future__ import annotations

import grpc

from virtrigaud.providers.base import (
    BUSY_REASON,
    Busy,
    Cause,
    ErrorKind,
    NotFoundError,
    OwnershipError,
    ProviderError,
    RetryableError,
    TerminalError,
)
from virtrigaud.providers.remote.wire import (
    MD_ERROR_CAUSE,
    MD_ERROR_FIELD,
    MD_ERROR_KIND,
    MD_ERROR_REASON,
    MD_RETRY_AFTER,
    Metadata,
    md_value,
)

_CODE_OF_KIND = {
    ErrorKind.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorKind.TERMINAL: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorKind.RETRYABLE: grpc.StatusCode.UNAVAILABLE,
}
_KIND_OF_CODE = {
    grpc.StatusCode.NOT_FOUND: ErrorKind.NOT_FOUND,
    grpc.StatusCode.INVALID_ARGUMENT: ErrorKind.TERMINAL,
    grpc.StatusCode.FAILED_PRECONDITION: ErrorKind.TERMINAL,
    grpc.StatusCode.ALREADY_EXISTS: ErrorKind.TERMINAL,
    grpc.StatusCode.OUT_OF_RANGE: ErrorKind.TERMINAL,
    grpc.StatusCode.UNIMPLEMENTED: ErrorKind.TERMINAL,
}
_CLASSES = {
    ErrorKind.NOT_FOUND: NotFoundError,
    ErrorKind.TERMINAL: TerminalError,
    ErrorKind.RETRYABLE: RetryableError,
}
# Codes that say the remote provider (not the hypervisor behind it) is in trouble.
TRANSPORT_FAILURES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.DATA_LOSS,
    }
)


def status_of(error: ProviderError) -> tuple[grpc.StatusCode, str, list[tuple[str, str]]]:
    """The gRPC code, message and trailers that carry error to the caller."""
    trailers = [(MD_ERROR_KIND, error.kind.value), (MD_ERROR_REASON, error.reason)]
    if error.field:
        trailers.append((MD_ERROR_FIELD, error.field))
    if error.retry_after is not None:
        trailers.append((MD_RETRY_AFTER, f"{error.retry_after:.3f}"))
    if error.cause is not None:
        trailers.append((MD_ERROR_CAUSE, error.cause.value))
    return _CODE_OF_KIND[error.kind], error.message, trailers


def error_from_trailers(message: str, trailers: Metadata | None) -> ProviderError | None:
    """The ProviderError our server described in trailers, if it did."""
    kind_name = md_value(trailers, MD_ERROR_KIND)
    if kind_name is None:
        return None
    try:
        kind = ErrorKind(kind_name)
    except ValueError:
        return None
    field = md_value(trailers, MD_ERROR_FIELD)
    retry = md_value(trailers, MD_RETRY_AFTER)
    retry_after = float(retry) if retry else None
    reason = md_value(trailers, MD_ERROR_REASON)
    if reason == "NotOwned":
        return OwnershipError(message, field=field, retry_after=retry_after)
    if kind is ErrorKind.RETRYABLE and reason == BUSY_REASON and retry_after:
        return Busy(message, field=field, retry_after=retry_after)
    cause_name = md_value(trailers, MD_ERROR_CAUSE)
    cause = next((c for c in Cause if c.value == cause_name), None)
    return _CLASSES[kind](message, field=field, retry_after=retry_after, cause=cause)


def is_application_error(trailers: Metadata | None) -> bool:
    return md_value(trailers, MD_ERROR_KIND) is not None


def kind_of_code(code: grpc.StatusCode) -> ErrorKind:
    return _KIND_OF_CODE.get(code, ErrorKind.RETRYABLE)


def error_of_code(code: grpc.StatusCode, message: str) -> ProviderError:
    return _CLASSES[kind_of_code(code)](message)


_TLS_MARKERS = ("ssl", "tls", "handshake", "certificate")


def transport_cause(code: grpc.StatusCode, details: str) -> Cause | None:
    """What a failure of the transport itself says about the remote provider's health."""
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        text = details.lower()
        return Cause.TLS if any(m in text for m in _TLS_MARKERS) else Cause.UNREACHABLE
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return Cause.AUTHENTICATION
    if code == grpc.StatusCode.INTERNAL and "deserializ" in details.lower():
        # A server answering garbage is as useless as one that does not answer.
        return Cause.UNREACHABLE
    return None
