"""Certificates for the provider wire: where they come from, and noticing when they change.

Both ends take the three keys of a Kubernetes TLS Secret (``tls.crt``, ``tls.key``,
``ca.crt``): from a directory where the Secret is mounted, from three explicit files, or
from the Secret's values in memory. A source is re-read when asked (at most once per
``recheck`` seconds for files), and its fingerprint changes when any of the three changes,
so a rotated leaf or CA bundle is picked up by the next connection without a restart.

Missing material is an error that names what is missing; there is no plaintext fallback.
Plaintext happens only when the operator passes an explicit insecure flag.
"""

from __future__ import annotations

import fnmatch
import hashlib
import ipaddress
import os
import ssl
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

CERT_KEY = "tls.crt"
KEY_KEY = "tls.key"
CA_KEY = "ca.crt"

TLS_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


class TLSConfigError(Exception):
    """TLS material is missing or unusable; the message names the file or key and the fix."""


@dataclass(frozen=True)
class TLSMaterial:
    cert: bytes
    key: bytes
    ca: bytes

    @property
    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for part in (self.cert, self.key, self.ca):
            h.update(hashlib.sha256(part).digest())
        return h.hexdigest()


class TLSSource:
    """Where the material lives; ``load()`` returns what is there now."""

    def describe(self) -> str:
        raise NotImplementedError

    def load(self) -> TLSMaterial:
        raise NotImplementedError

    def changed_since(self, fingerprint: str) -> TLSMaterial | None:
        """The material when it differs from fingerprint (cheap when it has not changed)."""
        material = self.load()
        return None if material.fingerprint == fingerprint else material


@dataclass
class SecretSource(TLSSource):
    """A TLS Secret's decoded values (the shard reads the Secret through the API)."""

    values: Mapping[str, str]
    name: str = "the TLS Secret"

    def describe(self) -> str:
        return self.name

    def load(self) -> TLSMaterial:
        missing = [k for k in (CERT_KEY, KEY_KEY, CA_KEY) if not self.values.get(k)]
        if missing:
            raise TLSConfigError(
                f"{self.name} has no {', '.join(repr(k) for k in missing)} key; a provider TLS "
                f"Secret needs {CERT_KEY!r}, {KEY_KEY!r} and {CA_KEY!r}"
            )
        return TLSMaterial(
            self.values[CERT_KEY].encode(),
            self.values[KEY_KEY].encode(),
            self.values[CA_KEY].encode(),
        )


@dataclass
class FileSource(TLSSource):
    """Three files, e.g. a mounted Secret directory; re-read when their stat changes."""

    cert: Path
    key: Path
    ca: Path
    recheck: float = 1.0
    _stat: tuple[tuple[float, int, int], ...] = field(default=(), init=False, repr=False)
    _material: TLSMaterial | None = field(default=None, init=False, repr=False)
    _checked: float = field(default=0.0, init=False, repr=False)

    @classmethod
    def directory(cls, path: str | os.PathLike[str], recheck: float = 1.0) -> FileSource:
        d = Path(path)
        return cls(d / CERT_KEY, d / KEY_KEY, d / CA_KEY, recheck)

    def describe(self) -> str:
        return f"{self.cert}, {self.key}, {self.ca}"

    def _stats(self) -> tuple[tuple[float, int, int], ...]:
        out = []
        for p in (self.cert, self.key, self.ca):
            try:
                st = p.stat()
            except FileNotFoundError as e:
                raise TLSConfigError(
                    f"TLS file {p} does not exist; mount the provider TLS Secret there or "
                    "pass the certificate, key and CA files explicitly"
                ) from e
            out.append((st.st_mtime, st.st_size, st.st_ino))
        return tuple(out)

    def load(self) -> TLSMaterial:
        now = time.monotonic()
        if self._material is not None and now - self._checked < self.recheck:
            return self._material
        self._checked = now
        stats = self._stats()
        if self._material is not None and stats == self._stat:
            return self._material
        material = TLSMaterial(self.cert.read_bytes(), self.key.read_bytes(), self.ca.read_bytes())
        for what, data in (("certificate", material.cert), ("CA bundle", material.ca)):
            if b"-----BEGIN CERTIFICATE-----" not in data:
                raise TLSConfigError(f"the {what} file holds no PEM certificate")
        self._stat, self._material = stats, material
        return material


def tls_version(name: str) -> ssl.TLSVersion:
    try:
        return TLS_VERSIONS[name]
    except KeyError:
        raise TLSConfigError(
            f"unknown TLS version {name!r}; use one of {', '.join(TLS_VERSIONS)}"
        ) from None


def server_context(material: TLSMaterial, *, min_version: str = "1.3") -> ssl.SSLContext:
    """A server context that requires a client certificate signed by the CA bundle."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = tls_version(min_version)
    ctx.verify_mode = ssl.CERT_REQUIRED
    _load_chain(ctx, material)
    try:
        ctx.load_verify_locations(cadata=material.ca.decode())
    except ssl.SSLError as e:
        raise TLSConfigError(f"the CA bundle cannot be used: {e}") from e
    ctx.set_alpn_protocols(["h2"])
    return ctx


def _load_chain(ctx: ssl.SSLContext, material: TLSMaterial) -> None:
    # ssl loads chains only from files; a private temporary directory keeps the key unexposed.
    import tempfile

    with tempfile.TemporaryDirectory(prefix="virtrigaud-tls-") as tmp:
        cert, key = Path(tmp, "tls.crt"), Path(tmp, "tls.key")
        cert.write_bytes(material.cert)
        key.touch(mode=0o600)
        key.write_bytes(material.key)
        try:
            ctx.load_cert_chain(cert, key)
        except ssl.SSLError as e:
            raise TLSConfigError(f"the certificate and key cannot be used together: {e}") from e


def peer_sans(cert: Mapping[str, object] | None) -> list[str]:
    """DNS names, IP addresses and URIs of a peer certificate (from ``getpeercert()``)."""
    out: list[str] = []
    for entry in (cert or {}).get("subjectAltName", ()) or ():  # type: ignore[attr-defined]
        kind, value = entry
        if kind in ("DNS", "IP Address", "URI"):
            out.append(str(value).strip())
    return out


@dataclass(frozen=True)
class SanAllowList:
    """Which client certificates may call: any SAN matching one pattern (``*`` globs).

    An empty list admits every certificate the CA signed."""

    patterns: tuple[str, ...] = ()

    @classmethod
    def of(cls, patterns: Iterable[str]) -> SanAllowList:
        return cls(tuple(p.strip() for p in patterns if p.strip()))

    def allows(self, sans: Iterable[str]) -> bool:
        if not self.patterns:
            return True
        for san in sans:
            for pattern in self.patterns:
                if _ip_equal(san, pattern) or fnmatch.fnmatchcase(san, pattern):
                    return True
        return False


def _ip_equal(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return False
