"""Counting proxies in front of the simulators: every hypervisor request, seen where it
arrives, with its arrival time.

The rate limit is a promise about what reaches the hypervisor, so the ratelimit scenario
counts requests here rather than the tokens the bucket grants: a token is taken before
the in-flight cap and the thread pool's queue, so calls can bunch after it, and a call
that makes more requests than it pays for would pass unseen at the bucket.

* ``HttpCountingProxy`` terminates TLS (its own self-signed certificate; the Providers
  skip verification), counts each HTTP/1.1 request as its head arrives, and pipes the
  bytes to the simulator over TLS unchanged (vcsim's SOAP, fakepve's REST).
* ``LibvirtCountingProxy`` listens on a unix socket and counts the libvirt RPC calls
  (program REMOTE, type CALL) in the client's stream before passing it on to libvirtd;
  keepalives are not counted.

Both record ``time.monotonic()`` of every request in ``arrivals``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from vrscale.workload import Target

READ_CHUNK = 65536


BODY_KEPT = 4096  # bytes of each request body kept when requests are recorded


@dataclass
class HttpRequest:
    """One request as it arrived: its request line and the start of a fixed-length body
    (enough for a SOAP operation's name); filled while the body streams in."""

    line: str
    body: bytearray = field(default_factory=bytearray)


class HttpRequestFramer:
    """Finds where each HTTP/1.1 request starts in a client's byte stream (keep-alive,
    Content-Length and chunked bodies); ``feed`` returns how many requests began. With
    ``record``, each request is also appended there (``HttpRequest``)."""

    def __init__(self, record: list[HttpRequest] | None = None) -> None:
        self._record = record
        self._current: HttpRequest | None = None
        self._buf = b""
        self._body = 0  # bytes of the current fixed-length body still to skip
        self._chunked = False
        self._chunk_left = -1  # -1: a chunk-size line is next; else data (+CRLF) to skip
        self._trailers = False

    def feed(self, data: bytes) -> int:
        self._buf += data
        started = 0
        while True:
            if self._body:
                take = min(self._body, len(self._buf))
                if self._current is not None and len(self._current.body) < BODY_KEPT:
                    self._current.body += self._buf[: min(take, BODY_KEPT)]
                self._buf = self._buf[take:]
                self._body -= take
                if self._body:
                    return started
                continue
            if self._chunked:
                if not self._skip_chunks():
                    return started
                continue
            head_end = self._buf.find(b"\r\n\r\n")
            if head_end < 0:
                return started
            head = self._buf[:head_end].decode("latin-1")
            self._buf = self._buf[head_end + 4 :]
            if not head.strip():
                continue  # stray CRLFs between requests
            started += 1
            if self._record is not None:
                self._current = HttpRequest(head.split("\r\n", 1)[0])
                self._record.append(self._current)
            length, chunked = _body_of(head)
            self._body = length
            self._chunked = chunked

    def _skip_chunks(self) -> bool:
        """Consume chunked-body bytes; True once the body (and its trailers) ended."""
        while True:
            if self._trailers:
                end = self._buf.find(b"\r\n")
                if end < 0:
                    return False
                line, self._buf = self._buf[:end], self._buf[end + 2 :]
                if not line:
                    self._trailers = False
                    self._chunked = False
                    return True
                continue
            if self._chunk_left < 0:
                end = self._buf.find(b"\r\n")
                if end < 0:
                    return False
                size = int(self._buf[:end].split(b";")[0].strip() or b"0", 16)
                self._buf = self._buf[end + 2 :]
                if size == 0:
                    self._trailers = True
                    continue
                self._chunk_left = size + 2  # the data and its CRLF
            take = min(self._chunk_left, len(self._buf))
            self._buf = self._buf[take:]
            self._chunk_left -= take
            if self._chunk_left:
                return False
            self._chunk_left = -1


def _body_of(head: str) -> tuple[int, bool]:
    length = 0
    chunked = False
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value.strip())
        elif name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
    return (0, True) if chunked else (length, False)


REMOTE_PROGRAM = 0x20008086
KEEPALIVE_PROGRAM = 0x6B656570
CALL_TYPES = (0, 4)  # VIR_NET_CALL, VIR_NET_CALL_WITH_FDS


class LibvirtCallFramer:
    """Splits a libvirt RPC client stream into messages (4-byte length, then program,
    version, procedure, type, serial, status) and counts the remote-program calls."""

    def __init__(self) -> None:
        self._buf = b""
        self.procedures: dict[int, int] = {}
        self.last: list[int] = []
        """The procedure numbers of the calls found by the last feed."""

    def feed(self, data: bytes) -> int:
        self._buf += data
        calls = 0
        self.last = []
        while len(self._buf) >= 4:
            (length,) = struct.unpack(">I", self._buf[:4])
            if length < 28:
                raise ValueError(f"libvirt RPC message of {length} bytes: not a libvirt stream")
            if len(self._buf) < length:
                break
            prog, _vers, proc, kind = struct.unpack(">IIiI", self._buf[4:20])
            self._buf = self._buf[length:]
            if prog == REMOTE_PROGRAM and kind in CALL_TYPES:
                calls += 1
                self.procedures[proc] = self.procedures.get(proc, 0) + 1
                self.last.append(proc)
        return calls


class _CountingProxy:
    def __init__(self, name: str) -> None:
        self.name = name
        self.arrivals: list[float] = []
        self.connections = 0
        self.errors: list[str] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def _pipe(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        count: Callable[[bytes], int] | None,
    ) -> None:
        try:
            while True:
                data = await reader.read(READ_CHUNK)
                if not data:
                    break
                if count is not None:
                    now = time.monotonic()
                    n = count(data)
                    self.arrivals.extend([now] * n)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, ssl.SSLError, OSError, ValueError) as e:
            if not isinstance(e, ConnectionResetError | BrokenPipeError):
                self.errors.append(f"{self.name}: {type(e).__name__}: {e}")
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _join(
        self,
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        count: Callable[[bytes], int],
    ) -> None:
        self.connections += 1
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        writers = {client[1], upstream[1]}
        self._writers |= writers
        try:
            await asyncio.gather(
                self._pipe(client[0], upstream[1], count),
                self._pipe(upstream[0], client[1], None),
            )
        finally:
            self._writers -= writers
            if task is not None:
                self._tasks.discard(task)

    async def close(self) -> None:
        """Stop listening and end every connection (both sides closed, the pipes return)."""
        if self._server is not None:
            self._server.close()
        # Abort, not close: a TLS close waits for the peer's close_notify, and a handler
        # task cancelled instead would be logged as an error by asyncio on Python 3.11.
        for writer in list(self._writers):
            with contextlib.suppress(Exception):
                writer.transport.abort()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5.0)


class HttpCountingProxy(_CountingProxy):
    """TLS in, TLS out, each HTTP request counted as its head arrives."""

    def __init__(
        self, name: str, upstream_host: str, upstream_port: int, *, record: bool = False
    ) -> None:
        super().__init__(name)
        self.upstream = (upstream_host, upstream_port)
        self.requests: list[HttpRequest] | None = [] if record else None
        """With ``record``: every request, in arrival order per connection."""
        self.port = 0
        self._certs = tempfile.TemporaryDirectory(prefix="vrscale-proxy-")

    async def start(self) -> None:
        from fakepve.certs import make_cert

        certfile, keyfile, _ = make_cert(self._certs.name, hosts=("127.0.0.1",))
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ctx.load_cert_chain(certfile, keyfile)
        client_ctx = ssl.create_default_context()
        client_ctx.check_hostname = False
        client_ctx.verify_mode = ssl.CERT_NONE

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                up = await asyncio.open_connection(*self.upstream, ssl=client_ctx)
            except OSError as e:
                self.errors.append(f"{self.name}: cannot reach {self.upstream}: {e}")
                writer.close()
                return
            framer = HttpRequestFramer(self.requests)
            await self._join((reader, writer), up, framer.feed)

        self._server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        await super().close()
        self._certs.cleanup()


class LibvirtCountingProxy(_CountingProxy):
    """A unix socket in front of libvirtd's; each RPC call counted."""

    def __init__(self, name: str, upstream_socket: str, socket_path: Path) -> None:
        super().__init__(name)
        self.upstream_socket = upstream_socket
        self.socket_path = socket_path
        self.procedures: list[int] = []
        """The procedure number of each call, in the order of `arrivals`."""

    async def start(self) -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                up = await asyncio.open_unix_connection(self.upstream_socket)
            except OSError as e:
                self.errors.append(f"{self.name}: cannot reach {self.upstream_socket}: {e}")
                writer.close()
                return
            framer = LibvirtCallFramer()

            def count(data: bytes) -> int:
                n = framer.feed(data)
                self.procedures.extend(framer.last)
                return n

            await self._join((reader, writer), up, count)

        self.socket_path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(handle, str(self.socket_path))

    @property
    def uri(self) -> str:
        return f"test+unix:///default?socket={self.socket_path}"

    async def close(self) -> None:
        await super().close()
        self.socket_path.unlink(missing_ok=True)


Proxy = HttpCountingProxy | LibvirtCountingProxy


def _with_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"127.0.0.1:{port}"))


async def proxied(targets: list[Target], state_dir: Path) -> tuple[list[Target], dict[str, Proxy]]:
    """Each target behind a counting proxy: the targets to use, and the proxies by sim."""
    out: list[Target] = []
    proxies: dict[str, Proxy] = {}
    for t in targets:
        proxy: Proxy
        if t.provider_type == "libvirt":
            socket = t.endpoint.split("socket=", 1)[1].split("&", 1)[0]
            proxy = LibvirtCountingProxy(t.sim, socket, state_dir / "lv-proxy.sock")
            await proxy.start()
            out.append(replace(t, endpoint=proxy.uri, credentials={"uri": proxy.uri}))
        else:
            up = urlsplit(t.endpoint)
            proxy = HttpCountingProxy(t.sim, up.hostname or "127.0.0.1", up.port or 443)
            await proxy.start()
            out.append(replace(t, endpoint=_with_port(t.endpoint, proxy.port)))
        proxies[t.sim] = proxy
    return out, proxies
