"""vSphere faults and transport failures as the three provider error kinds."""

from __future__ import annotations

import http.client
import socket
import ssl
from collections.abc import Callable

from virtrigaud.providers.base import (
    Cause,
    NotFoundError,
    ProviderError,
    RetryableError,
    TerminalError,
)
from virtrigaud.providers.calls import ErrorMapper
from virtrigaud.providers.vsphere.sdk import vim, vmodl


class SessionExpiredError(RetryableError):
    """The vCenter session is gone (expired, terminated, vCenter restarted): log in again."""


# The user must change the spec or the Provider: retrying the same call cannot succeed.
_TERMINAL_FAULTS: tuple[type[BaseException], ...] = (
    vim.fault.NoPermission,
    vim.fault.InsufficientResourcesFault,
    vim.fault.NoDiskSpace,
    vim.fault.InvalidDeviceSpec,
    vim.fault.InvalidDatastore,
    vim.fault.InvalidName,
    vim.fault.AlreadyExists,
    vim.fault.FileAlreadyExists,
    vim.fault.VmConfigFault,
    vim.fault.CustomizationFault,
    vmodl.fault.InvalidArgument,
    vmodl.fault.NotSupported,
    vmodl.fault.InvalidRequest,
)

# vCenter is busy with the object or the object is mid-change: try again later.
_RETRYABLE_FAULTS: tuple[type[BaseException], ...] = (
    vim.fault.TaskInProgress,
    vim.fault.InvalidState,
    vim.fault.ResourceInUse,
    vim.fault.ConcurrentAccess,
    vim.fault.DuplicateName,
    vim.fault.Timedout,
    vmodl.fault.HostCommunication,
    vmodl.fault.SystemError,
    vmodl.fault.RequestCanceled,
)


def fault_name(e: BaseException) -> str:
    name = getattr(e, "_wsdlName", None) or type(e).__name__
    return str(name)


def fault_text(e: BaseException) -> str:
    msg = getattr(e, "msg", None)
    if isinstance(msg, str) and msg:
        return msg
    return str(e) or fault_name(e)


def error_mapper(endpoint: str, username: str, secrets: tuple[str, ...]) -> ErrorMapper:
    """The gate's mapper for one endpoint; messages name the endpoint and never a secret."""

    def scrub(text: str) -> str:
        for secret in secrets:
            if secret:
                text = text.replace(secret, "***")
        return text

    def map_error(e: BaseException) -> ProviderError:
        return _map(e, endpoint, username, scrub)

    return map_error


def _map(
    e: BaseException, endpoint: str, username: str, scrub: Callable[[str], str]
) -> ProviderError:
    what = f"{fault_name(e)}: {scrub(fault_text(e))}"
    if isinstance(e, ProviderError):
        return e
    if isinstance(e, vim.fault.InvalidLogin):
        return TerminalError(
            f"vCenter {endpoint} rejected the login of user {username!r}; put the right "
            "username and password in the Provider's credentials Secret",
            field="spec.credentialSecretRef",
            cause=Cause.AUTHENTICATION,
        )
    if isinstance(e, vim.fault.NotAuthenticated):
        return SessionExpiredError(f"the session with vCenter {endpoint} expired ({what})")
    if isinstance(e, vmodl.fault.ManagedObjectNotFound):
        obj = getattr(e, "obj", None)
        ref = obj._moId if obj is not None and hasattr(obj, "_moId") else "object"
        return NotFoundError(f"{ref} does not exist on vCenter {endpoint}")
    if isinstance(e, vim.fault.NotFound):
        return NotFoundError(f"vCenter {endpoint}: {what}")
    if isinstance(e, vim.fault.InvalidPowerState):
        return RetryableError(f"vCenter {endpoint}: the VM is in the wrong power state ({what})")
    if isinstance(e, _TERMINAL_FAULTS):
        return TerminalError(f"vCenter {endpoint} refused the request: {what}")
    if isinstance(e, _RETRYABLE_FAULTS):
        return RetryableError(f"vCenter {endpoint} is busy: {what}")
    if isinstance(e, ssl.SSLCertVerificationError):
        return TerminalError(
            f"the TLS certificate of {endpoint} is not trusted ({e.verify_message}); "
            "install a trusted certificate or set spec.insecureSkipVerify for test setups",
            field="spec.insecureSkipVerify",
            cause=Cause.TLS,
        )
    if isinstance(e, ssl.SSLError):
        return RetryableError(
            f"the TLS handshake with {endpoint} failed ({scrub(str(e))}); check that the "
            "endpoint speaks TLS on that port",
            cause=Cause.TLS,
        )
    if isinstance(e, ConnectionRefusedError):
        return RetryableError(
            f"vCenter {endpoint} refused the connection (is it running?)",
            cause=Cause.UNREACHABLE,
        )
    if isinstance(e, socket.timeout | TimeoutError):
        return RetryableError(f"vCenter {endpoint} did not answer in time", cause=Cause.UNREACHABLE)
    if isinstance(e, http.client.RemoteDisconnected | ConnectionError | http.client.HTTPException):
        return RetryableError(
            f"vCenter {endpoint} dropped the connection ({type(e).__name__})",
            cause=Cause.UNREACHABLE,
        )
    if isinstance(e, OSError):
        return RetryableError(
            f"cannot reach vCenter {endpoint}: {scrub(str(e))}", cause=Cause.UNREACHABLE
        )
    if isinstance(e, vmodl.MethodFault):
        # A fault this table does not know: report it and let the backoff retry.
        return RetryableError(f"vCenter {endpoint} failed the call: {what}")
    return RetryableError(
        f"unexpected {type(e).__name__} talking to vCenter {endpoint}: {scrub(str(e))}"
    )
