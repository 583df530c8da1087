"""The provider server's TLS front: mTLS with Python's ssl, then bytes to the gRPC server.

gRPC's Python server can neither raise its minimum TLS version nor report refused
handshakes, so the server terminates TLS here and hands each accepted connection to the
gRPC server on a private Unix socket. That buys:

- TLS 1.3 only (unless configured), a client certificate required and verified against
  the CA bundle, and the SAN allow-list checked before a single gRPC byte is read;
- every refusal counted by reason (no certificate, unknown CA, expired, SAN not allowed);
- the server certificate AND the CA bundle re-read for each new connection when their
  source changed, while open connections carry on with what they negotiated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl

from virtrigaud.providers.remote.metrics import (
    SERVER_CONNECTIONS,
    SERVER_TLS_REFUSED,
    SERVER_TLS_RELOAD_ERRORS,
    SERVER_TLS_RELOADS,
)
from virtrigaud.providers.remote.tls import (
    SanAllowList,
    TLSConfigError,
    TLSSource,
    peer_sans,
    server_context,
)

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 10.0
_CHUNK = 256 * 1024


def refusal_reason(error: BaseException) -> str:
    """A short label for why a handshake failed."""
    if isinstance(error, TimeoutError):
        return "handshake_timeout"
    if isinstance(error, ssl.SSLCertVerificationError):
        code = error.verify_code
        if code == 10:  # X509_V_ERR_CERT_HAS_EXPIRED
            return "expired"
        if code == 9:  # X509_V_ERR_CERT_NOT_YET_VALID
            return "not_yet_valid"
        if code in (2, 18, 19, 20, 21):  # issuer unknown / self-signed / untrusted chain
            return "unknown_ca"
        return "verify_failed"
    text = str(error).upper()
    if "PEER_DID_NOT_RETURN_A_CERTIFICATE" in text or "CERTIFICATE_REQUIRED" in text:
        return "no_client_cert"
    if "VERSION" in text or "PROTOCOL" in text:
        return "protocol_version"
    return "handshake_error"


class ServerTLS:
    """The current server SSLContext, rebuilt when the source's material changes."""

    def __init__(self, source: TLSSource, *, min_version: str = "1.3") -> None:
        self.source = source
        self.min_version = min_version
        material = source.load()  # a missing or broken source stops the server from starting
        self._fingerprint = material.fingerprint
        self._context = server_context(material, min_version=min_version)

    def current(self) -> ssl.SSLContext:
        try:
            changed = self.source.changed_since(self._fingerprint)
            if changed is not None:
                self._context = server_context(changed, min_version=self.min_version)
                self._fingerprint = changed.fingerprint
                SERVER_TLS_RELOADS.inc()
                log.info("provider server: TLS certificate or CA bundle reloaded")
        except (TLSConfigError, OSError, ssl.SSLError) as e:
            # Half-written files during a rotation: keep serving with the last good material.
            SERVER_TLS_RELOAD_ERRORS.inc()
            log.warning("provider server: TLS reload failed, keeping the previous material: %s", e)
        return self._context


class TLSFront:
    """Accepts TCP on host:port, does mTLS, pipes to the gRPC server's Unix socket."""

    def __init__(
        self,
        tls: ServerTLS,
        allowed: SanAllowList,
        backend_socket: str,
        *,
        handshake_timeout: float = HANDSHAKE_TIMEOUT,
    ) -> None:
        self.tls = tls
        self.allowed = allowed
        self.backend_socket = backend_socket
        self.handshake_timeout = handshake_timeout
        self._listener: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._conns: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> int:
        self._listener = socket.create_server((host, port), backlog=512)
        self._listener.setblocking(False)
        self._accepting = asyncio.create_task(self._accept_loop(), name="provider-tls-accept")
        return int(self._listener.getsockname()[1])

    async def stop_accepting(self) -> None:
        if self._accepting is not None:
            self._accepting.cancel()
            await asyncio.gather(self._accepting, return_exceptions=True)
            self._accepting = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    async def close_connections(self) -> None:
        for task in list(self._conns):
            task.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._listener is not None
        while True:
            conn, peer = await loop.sock_accept(self._listener)
            task = asyncio.create_task(self._serve(conn, peer))
            self._conns.add(task)
            task.add_done_callback(self._conns.discard)

    async def _serve(self, conn: socket.socket, peer: object) -> None:
        # The handshake runs on the raw accepted socket, so no byte of the ClientHello is
        # read before the (possibly reloaded) context takes over.
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=_CHUNK)
        protocol = asyncio.StreamReaderProtocol(reader)
        try:
            transport, _ = await loop.connect_accepted_socket(
                lambda: protocol,
                conn,
                ssl=self.tls.current(),
                ssl_handshake_timeout=self.handshake_timeout,
            )
        except (ssl.SSLError, TimeoutError, ConnectionError, OSError) as e:
            reason = refusal_reason(e)
            SERVER_TLS_REFUSED.labels(reason).inc()
            log.warning("provider server: refused %s: %s (%s)", peer, reason, e)
            conn.close()
            return
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        sslobj = writer.get_extra_info("ssl_object")
        sans = peer_sans(sslobj.getpeercert() if sslobj is not None else None)
        if not self.allowed.allows(sans):
            SERVER_TLS_REFUSED.labels("san_not_allowed").inc()
            log.warning(
                "provider server: refused %s: client certificate SANs %s match none of %s",
                peer,
                sans or "(none)",
                list(self.allowed.patterns),
            )
            writer.close()
            return
        try:
            b_reader, b_writer = await asyncio.open_unix_connection(self.backend_socket)
        except OSError as e:
            log.error("provider server: gRPC backend unreachable: %s", e)
            writer.close()
            return
        SERVER_CONNECTIONS.inc()
        try:
            await _pipe_both(reader, writer, b_reader, b_writer)
        finally:
            SERVER_CONNECTIONS.dec()


async def _pipe_both(
    a_reader: asyncio.StreamReader,
    a_writer: asyncio.StreamWriter,
    b_reader: asyncio.StreamReader,
    b_writer: asyncio.StreamWriter,
) -> None:
    up = asyncio.create_task(_pipe(a_reader, b_writer))
    down = asyncio.create_task(_pipe(b_reader, a_writer))
    try:
        await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (up, down):
            task.cancel()
        await asyncio.gather(up, down, return_exceptions=True)
        for w in (a_writer, b_writer):
            with contextlib.suppress(Exception):
                w.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await reader.read(_CHUNK)
            if not data:
                return
            writer.write(data)
            if writer.transport.get_write_buffer_size() > _CHUNK:
                await writer.drain()
    except (ConnectionError, ssl.SSLError, OSError):
        return
