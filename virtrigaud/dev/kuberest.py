"""The few synchronous API-server calls the stack itself makes (Secrets, CRDs, health).

The stack's own bootstrap runs before any event loop exists and from a CLI, so it uses
plain requests, and verifies the server against the self-signed CA kubelite wrote into
its cert dir (the kubeconfig for people and kubectl skips verification instead).
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import requests

from virtrigaud.dev.errors import StackError

FIELD_MANAGER = "virtrigaud-dev"
MANAGED_BY = {"app.kubernetes.io/managed-by": "virtrigaud-dev"}


class DevKube:
    def __init__(self, server: str, ca_file: str, token: str, timeout: float = 10.0) -> None:
        self.server = server.rstrip("/")
        self.ca_file = ca_file
        self.session = requests.Session()
        # Loopback only: no proxies, and no REQUESTS_CA_BUNDLE overriding our CA.
        self.session.trust_env = False
        self.session.headers["Authorization"] = f"Bearer {token}"
        self.timeout = timeout

    def close(self) -> None:
        self.session.close()

    def get_text(self, path: str) -> tuple[int, str]:
        r = self._request("GET", path)
        return r.status_code, r.text

    def get_json(self, path: str) -> dict[str, Any]:
        r = self._request("GET", path)
        self._raise(r, f"GET {path}")
        body: dict[str, Any] = r.json()
        return body

    def apply(self, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply obj at path (the object's own URL), forcing ownership."""
        r = self._request(
            "PATCH",
            path,
            params={"fieldManager": FIELD_MANAGER, "force": "true"},
            data=json.dumps(obj),
            headers={"Content-Type": "application/apply-patch+yaml"},
        )
        self._raise(r, f"apply {path}")
        body: dict[str, Any] = r.json()
        return body

    def apply_secret(self, namespace: str, name: str, data: dict[str, str]) -> None:
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace, "labels": MANAGED_BY},
            "type": "Opaque",
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        }
        self.apply(f"/api/v1/namespaces/{namespace}/secrets/{name}", secret)

    def apply_crd(self, crd: dict[str, Any]) -> str:
        name = crd.get("metadata", {}).get("name")
        if not isinstance(name, str) or not name:
            raise StackError("kube", "a CRD from all_crds() has no metadata.name", "fix crdgen")
        self.apply(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}", crd)
        return name

    def wait_established(self, names: list[str], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        pending = list(names)
        while pending:
            name = pending[0]
            crd = self.get_json(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
            conditions = {
                c.get("type"): c for c in crd.get("status", {}).get("conditions", []) or []
            }
            established = conditions.get("Established", {}).get("status") == "True"
            if established:
                pending.pop(0)
                continue
            if time.monotonic() > deadline:
                why = conditions.get("NamesAccepted", {}).get("message") or "no condition yet"
                raise StackError(
                    "kube",
                    f"CRD {name} is not Established after {timeout:.0f}s ({why})",
                    "fix the CRD's names in virtrigaud/api",
                )
            time.sleep(0.05)

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.session.request(
            method, self.server + path, timeout=self.timeout, verify=self.ca_file, **kwargs
        )

    @staticmethod
    def _raise(r: requests.Response, what: str) -> None:
        if r.status_code < 300:
            return
        try:
            message = r.json().get("message", r.text)
        except ValueError:
            message = r.text
        raise StackError(
            "kube",
            f"{what} answered {r.status_code}: {message}",
            "read the API server log in the state dir (logs/kubelite.log)",
        )
