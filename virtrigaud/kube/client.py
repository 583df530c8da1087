"""A small asyncio Kubernetes client over aiohttp.

VirtRigaud only needs JSON CRUD, patches, server-side apply and watches on a handful of
resources, so it speaks the REST API directly instead of carrying a generated client: one
keep-alive connection pool per process, no model (de)serialisation on the hot path.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import json
import os
import ssl
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp
import yaml
from prometheus_client import Histogram

from virtrigaud.kube.resources import Resource

JSON = dict[str, Any]
PatchType = Literal["merge", "json", "apply", "strategic"]

_PATCH_CONTENT_TYPES: dict[str, str] = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "apply": "application/apply-patch+yaml",
    "strategic": "application/strategic-merge-patch+json",
}


REQUEST_SECONDS = Histogram(
    "virtrigaud_kube_request_seconds",
    "Latency of Kubernetes API requests (not watches), by HTTP verb",
    ["verb"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


class ApiError(Exception):
    """A non-2xx answer from the API server, with its Status fields."""

    def __init__(self, status: int, reason: str, message: str, body: JSON | None = None) -> None:
        self.status = status
        self.reason = reason
        self.message = message
        self.body = body or {}
        super().__init__(f"{status} {reason}: {message}")

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def gone(self) -> bool:
        return self.status == 410


TOO_MANY_REQUESTS_RETRIES = 10


class _TooManyRequests(Exception):
    """A 429 answer, retried after its Retry-After (capped), like client-go does."""

    def __init__(self, error: ApiError, retry_after: str | None) -> None:
        self.error = error
        try:
            self.retry_after = min(max(float(retry_after or 1), 0.1), 10.0)
        except ValueError:
            self.retry_after = 1.0
        super().__init__(str(error))


@dataclass(frozen=True)
class WatchEvent:
    type: str  # ADDED, MODIFIED, DELETED, BOOKMARK
    object: JSON

    @property
    def resource_version(self) -> str:
        return str(self.object.get("metadata", {}).get("resourceVersion", ""))


TOKEN_REREAD_SECONDS = 60.0
"""How often a token file is read again: the kubelet rotates a pod's projected
ServiceAccount token (about hourly), and client-go re-reads it every minute too."""


@dataclass
class ClusterConfig:
    server: str
    token: str | None = None
    verify: bool = True
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    token_file: str | None = None
    """When set, `token` follows this file (re-read every TOKEN_REREAD_SECONDS)."""
    _tempfiles: list[str] = field(default_factory=list, repr=False)
    _token_read: float = field(default=0.0, repr=False)

    def bearer_token(self) -> str | None:
        if self.token_file and time.monotonic() - self._token_read >= TOKEN_REREAD_SECONDS:
            self.token = Path(self.token_file).read_text().strip()
            self._token_read = time.monotonic()
        return self.token

    def ssl_context(self) -> ssl.SSLContext | bool:
        if not self.server.startswith("https"):
            return False
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if not self.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.cert_file and self.key_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx


def _materialise(data_b64: str, suffix: str, keep: list[str]) -> str:
    """Write kubeconfig *-data fields to a private temp file: ssl needs paths."""
    fd, path = tempfile.mkstemp(prefix="virtrigaud-kube-", suffix=suffix)
    with os.fdopen(fd, "wb") as f:
        f.write(base64.b64decode(data_b64))
    keep.append(path)
    return path


def load_kubeconfig(path: str | os.PathLike[str] | None = None) -> ClusterConfig:
    """Read the current context of a kubeconfig ($KUBECONFIG or ~/.kube/config by default)."""
    if path is None:
        path = os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text())
    except FileNotFoundError as e:
        raise ValueError(f"kubeconfig {p} does not exist: set --kubeconfig or KUBECONFIG") from e
    ctx_name = doc.get("current-context")
    contexts = {c["name"]: c["context"] for c in doc.get("contexts", [])}
    if ctx_name not in contexts:
        if len(contexts) != 1:
            raise ValueError(f"kubeconfig {p}: current-context {ctx_name!r} is not defined")
        ctx_name = next(iter(contexts))
    ctx = contexts[ctx_name]
    clusters = {c["name"]: c["cluster"] for c in doc.get("clusters", [])}
    users = {u["name"]: u.get("user") or {} for u in doc.get("users", [])}
    cluster = clusters[ctx["cluster"]]
    user = users.get(ctx.get("user", ""), {})
    cfg = ClusterConfig(server=cluster["server"].rstrip("/"))
    cfg.verify = not cluster.get("insecure-skip-tls-verify", False)
    if "certificate-authority-data" in cluster:
        cfg.ca_file = _materialise(cluster["certificate-authority-data"], ".crt", cfg._tempfiles)
    elif "certificate-authority" in cluster:
        cfg.ca_file = cluster["certificate-authority"]
    cfg.token = user.get("token")
    if "token-file" in user:
        cfg.token_file = user["token-file"]
        cfg.bearer_token()
    if "client-certificate-data" in user:
        cfg.cert_file = _materialise(user["client-certificate-data"], ".crt", cfg._tempfiles)
    elif "client-certificate" in user:
        cfg.cert_file = user["client-certificate"]
    if "client-key-data" in user:
        cfg.key_file = _materialise(user["client-key-data"], ".key", cfg._tempfiles)
    elif "client-key" in user:
        cfg.key_file = user["client-key"]
    return cfg


SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
SERVICE_ACCOUNT_DIR_ENV = "VIRTRIGAUD_SERVICEACCOUNT_DIR"
"""Overrides where the pod's ServiceAccount files are (tests on a machine without pods)."""


def service_account_dir() -> Path:
    return Path(os.environ.get(SERVICE_ACCOUNT_DIR_ENV) or SERVICE_ACCOUNT_DIR)


def load_in_cluster() -> ClusterConfig:
    """The service-account configuration a pod gets; the token follows its file."""
    sa = service_account_dir()
    host = os.environ["KUBERNETES_SERVICE_HOST"]
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    if ":" in host:
        host = f"[{host}]"  # an IPv6 service address
    cfg = ClusterConfig(
        server=f"https://{host}:{port}",
        token_file=str(sa / "token"),
        ca_file=str(sa / "ca.crt"),
    )
    cfg.bearer_token()
    return cfg


class KubeClient:
    """Async JSON client for the Kubernetes API. One per process; share it."""

    def __init__(self, config: ClusterConfig, *, pool_size: int = 64) -> None:
        self.config = config
        self._pool_size = pool_size
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_kubeconfig(cls, path: str | os.PathLike[str] | None = None) -> KubeClient:
        if (
            path is None
            and "KUBERNETES_SERVICE_HOST" in os.environ
            and not os.environ.get("KUBECONFIG")
        ):
            return cls(load_in_cluster())
        return cls(load_kubeconfig(path))

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _http(self) -> aiohttp.ClientSession:
        token = self.config.bearer_token()
        if self._session is None or self._session.closed:
            headers = {"Accept": "application/json", "User-Agent": "virtrigaud"}
            connector = aiohttp.TCPConnector(
                limit=self._pool_size, ssl=self.config.ssl_context(), keepalive_timeout=60
            )
            self._session = aiohttp.ClientSession(
                base_url=self.config.server, headers=headers, connector=connector
            )
        if token:
            self._session.headers["Authorization"] = f"Bearer {token}"
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int | bool] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> JSON:
        data = None
        headers = {}
        if body is not None:
            data = json.dumps(body, separators=(",", ":"))
            headers["Content-Type"] = content_type
        clean = {k: _param(v) for k, v in (params or {}).items()}
        for attempt in range(TOO_MANY_REQUESTS_RETRIES + 1):
            started = time.perf_counter()
            try:
                return await self._send(method, path, clean, data, headers, timeout)
            except _TooManyRequests as e:
                # What client-go does: the API server asks to come back (its storage is
                # (re)initializing, or priority and fairness is shedding load).
                if attempt == TOO_MANY_REQUESTS_RETRIES:
                    raise e.error from None
                await asyncio.sleep(e.retry_after)
            finally:
                REQUEST_SECONDS.labels(method).observe(time.perf_counter() - started)
        raise AssertionError("unreachable")

    async def _send(
        self,
        method: str,
        path: str,
        params: Mapping[str, str],
        data: str | None,
        headers: Mapping[str, str],
        timeout: float,
    ) -> JSON:
        async with self._http().request(
            method,
            path,
            params=params,
            data=data,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            text = await resp.text()
            payload: Any = json.loads(text) if text else {}
            if resp.status == 429:
                raise _TooManyRequests(
                    _api_error(resp.status, payload, text), resp.headers.get("Retry-After")
                )
            if resp.status >= 400:
                raise _api_error(resp.status, payload, text)
            return payload if isinstance(payload, dict) else {"items": payload}

    async def get(self, res: Resource, name: str, namespace: str | None = None) -> JSON:
        return await self.request("GET", res.object_path(name, namespace))

    async def list(
        self,
        res: Resource,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
        resource_version: str | None = None,
    ) -> JSON:
        params: dict[str, str | int | bool] = {}
        if label_selector:
            params["labelSelector"] = label_selector
        if field_selector:
            params["fieldSelector"] = field_selector
        if limit:
            params["limit"] = limit
        if continue_token:
            params["continue"] = continue_token
        if resource_version is not None:
            params["resourceVersion"] = resource_version
        return await self.request("GET", res.collection_path(namespace), params=params)

    async def list_all(
        self, res: Resource, namespace: str | None = None, *, page_size: int = 500
    ) -> tuple[builtins.list[JSON], str]:
        """Every object (paginated) and the list's resourceVersion, to start a watch from."""
        items: builtins.list[JSON] = []
        token: str | None = None
        while True:
            page = await self.list(res, namespace, limit=page_size, continue_token=token)
            items.extend(page.get("items", []))
            token = page.get("metadata", {}).get("continue")
            if not token:
                return items, str(page.get("metadata", {}).get("resourceVersion", ""))

    async def create(self, res: Resource, obj: JSON, namespace: str | None = None) -> JSON:
        ns = namespace or obj.get("metadata", {}).get("namespace")
        return await self.request("POST", res.collection_path(ns), body=obj)

    async def replace(self, res: Resource, obj: JSON, *, subresource: str | None = None) -> JSON:
        meta = obj["metadata"]
        path = res.object_path(meta["name"], meta.get("namespace"))
        if subresource:
            path += f"/{subresource}"
        return await self.request("PUT", path, body=obj)

    async def patch(
        self,
        res: Resource,
        name: str,
        namespace: str | None,
        patch: Any,
        *,
        patch_type: PatchType = "merge",
        subresource: str | None = None,
        field_manager: str | None = None,
        force: bool = False,
    ) -> JSON:
        path = res.object_path(name, namespace)
        if subresource:
            path += f"/{subresource}"
        params: dict[str, str | int | bool] = {}
        if field_manager:
            params["fieldManager"] = field_manager
        if force:
            params["force"] = True
        return await self.request(
            "PATCH",
            path,
            params=params,
            body=patch,
            content_type=_PATCH_CONTENT_TYPES[patch_type],
        )

    async def apply(
        self, res: Resource, obj: JSON, *, field_manager: str, force: bool = True
    ) -> JSON:
        """Server-side apply; creates the object when it does not exist."""
        meta = obj["metadata"]
        return await self.patch(
            res,
            meta["name"],
            meta.get("namespace"),
            obj,
            patch_type="apply",
            field_manager=field_manager,
            force=force,
        )

    async def delete(
        self,
        res: Resource,
        name: str,
        namespace: str | None = None,
        *,
        propagation: str | None = None,
        preconditions: JSON | None = None,
    ) -> JSON:
        body: JSON = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if propagation:
            body["propagationPolicy"] = propagation
        if preconditions:
            body["preconditions"] = preconditions
        return await self.request("DELETE", res.object_path(name, namespace), body=body)

    async def watch(
        self,
        res: Resource,
        namespace: str | None = None,
        *,
        resource_version: str | None = None,
        timeout_seconds: int = 300,
        label_selector: str | None = None,
        allow_bookmarks: bool = True,
    ) -> AsyncIterator[WatchEvent]:
        """Stream events after resource_version until the server ends the stream.

        An expired resourceVersion raises ApiError with status 410: the caller relists.
        """
        params: dict[str, str | int | bool] = {
            "watch": True,
            "timeoutSeconds": timeout_seconds,
            "allowWatchBookmarks": allow_bookmarks,
        }
        if resource_version is not None:
            params["resourceVersion"] = resource_version
        if label_selector:
            params["labelSelector"] = label_selector
        clean = {k: _param(v) for k, v in params.items()}
        timeout = aiohttp.ClientTimeout(total=None, sock_read=timeout_seconds + 30)
        async with self._http().get(
            res.collection_path(namespace), params=clean, timeout=timeout
        ) as resp:
            if resp.status >= 400:
                text = await resp.text()
                raise _api_error(resp.status, json.loads(text) if text else {}, text)
            async for raw in resp.content:
                line = raw.strip()
                if not line:
                    continue
                event = json.loads(line)
                if event.get("type") == "ERROR":
                    status = event.get("object", {})
                    raise _api_error(int(status.get("code", 500)), status, "")
                yield WatchEvent(event["type"], event["object"])


def _param(v: str | int | bool) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _api_error(status: int, payload: Any, text: str) -> ApiError:
    if isinstance(payload, dict) and payload.get("kind") == "Status":
        return ApiError(
            int(payload.get("code", status)),
            str(payload.get("reason", "")),
            str(payload.get("message", "")),
            payload,
        )
    return ApiError(status, "", text[:500])
