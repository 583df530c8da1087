"""The libvirt URI a Provider's endpoint and Secret amount to.

``spec.endpoint`` is a libvirt URI (``qemu+ssh://user@host/system``,
``qemu+tls://host/system``, ...). Secret keys used:

* ``username`` / ``password``: answered to libvirt's auth callback (SASL, ssh password).
* ``ssh-privatekey``: written to a private file and passed as ``keyfile``.
* ``known_hosts``: written to a private file and passed as ``known_hosts`` (honoured by
  the ``libssh`` and ``libssh2`` transports; the ``ssh`` transport uses ssh's own).

``insecure_skip_verify`` becomes ``no_verify=1`` (TLS certificate / ssh host key checks).
The files live in a 0700 temporary directory removed when the session closes.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import parse_qsl, quote


class Endpoint:
    def __init__(
        self, uri: str, credentials: Mapping[str, str], *, insecure_skip_verify: bool = False
    ) -> None:
        self.base = uri
        self._dir: Path | None = None
        params: list[tuple[str, str]] = []
        key = credentials.get("ssh-privatekey")
        if key:
            params.append(("keyfile", str(self._write("id_key", key))))
        hosts = credentials.get("known_hosts")
        if hosts:
            params.append(("known_hosts", str(self._write("known_hosts", hosts))))
        if insecure_skip_verify:
            params.append(("no_verify", "1"))
        self.uri = with_params(uri, params)

    def _write(self, name: str, content: str) -> Path:
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="virtrigaud-libvirt-"))
        path = self._dir / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(content if content.endswith("\n") else content + "\n")
        return path

    def cleanup(self) -> None:
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


def with_params(uri: str, params: list[tuple[str, str]]) -> str:
    """uri with params added; a parameter the URI already sets is kept as written."""
    if not params:
        return uri
    base, _, query = uri.partition("?")
    existing = parse_qsl(query, keep_blank_values=True)
    names = {k for k, _ in existing}
    merged = existing + [(k, v) for k, v in params if k not in names]
    return base + "?" + "&".join(f"{k}={quote(v, safe='/')}" for k, v in merged)
