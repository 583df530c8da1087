"""Why an endpoint failed (providers.base.Cause) survives the provider.v1 wire, and a
transport failure of the remote provider itself says Unreachable / TLSError."""

from __future__ import annotations

import grpc

from virtrigaud.providers.base import Cause, TerminalError
from virtrigaud.providers.remote.errors import error_from_trailers, status_of, transport_cause


def test_the_cause_rides_in_the_trailers() -> None:
    sent = TerminalError("refused", field="spec.credentialSecretRef", cause=Cause.AUTHENTICATION)
    _, message, trailers = status_of(sent)
    got = error_from_trailers(message, tuple(trailers))
    assert isinstance(got, TerminalError)
    assert got.cause is Cause.AUTHENTICATION
    assert got.field == "spec.credentialSecretRef"
    plain = error_from_trailers(*status_of(TerminalError("no cause"))[1:])
    assert plain is not None and plain.cause is None


def test_transport_failures_have_a_cause() -> None:
    assert transport_cause(grpc.StatusCode.UNAVAILABLE, "connection refused") is Cause.UNREACHABLE
    assert transport_cause(grpc.StatusCode.UNAVAILABLE, "SSL handshake failed") is Cause.TLS
    assert transport_cause(grpc.StatusCode.UNAUTHENTICATED, "") is Cause.AUTHENTICATION
    assert transport_cause(grpc.StatusCode.INTERNAL, "boom") is None
    garbage = "Exception deserializing response!"
    assert transport_cause(grpc.StatusCode.INTERNAL, garbage) is Cause.UNREACHABLE
