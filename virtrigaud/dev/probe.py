"""Health probes over loopback HTTPS to simulators whose certificates are made per start."""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping


def _unverified() -> ssl.SSLContext:
    # The simulators mint a fresh self-signed certificate each start and listen on loopback
    # only; the probe checks liveness, it does not trust the content.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def https_get(
    url: str, headers: Mapping[str, str] | None = None, timeout: float = 2.0
) -> tuple[int, str] | None:
    """(status, body) of a GET, or None when nothing answers."""
    req = urllib.request.Request(url, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=_unverified()) as r:
            return int(r.status), r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return int(e.code), e.read().decode(errors="replace")
    except (urllib.error.URLError, OSError):
        return None
