"""Who may talk to the dev API server: kubeconfigs, and the token file of its RBAC mode.

Without RBAC the server serves everyone and any token will do. With RBAC (`dev up
--rbac`) kubelite authenticates the bearer tokens listed in ``kube/tokens.csv`` (the
upstream ``--token-auth-file`` format: token,user,uid,"group1,group2"), rereading it
when it changes, so identities can be added while it runs. The admin identity is in
system:masters and may do everything.
"""

from __future__ import annotations

import csv
import io
import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from virtrigaud.dev.errors import StackError
from virtrigaud.dev.info import KubeInfo

ADMIN_USER = "virtrigaud-dev-admin"
ADMIN_GROUPS = ("system:masters",)
NO_AUTH_TOKEN = "dev"
"""What kubeconfigs carry when the server authenticates nobody: an empty user would make
some kubectl builds prompt for a username."""


@dataclass(frozen=True)
class KubeUser:
    name: str
    groups: tuple[str, ...]
    token: str
    kubeconfig: Path


def new_token() -> str:
    return secrets.token_urlsafe(24)


def service_account(namespace: str, name: str) -> tuple[str, tuple[str, ...]]:
    """The user name and groups kube-apiserver gives a ServiceAccount's token."""
    return (
        f"system:serviceaccount:{namespace}:{name}",
        ("system:serviceaccounts", f"system:serviceaccounts:{namespace}"),
    )


def write_kubeconfig(path: Path, server: str, token: str, user: str = "dev") -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "virtrigaud-dev",
                "cluster": {"server": server, "insecure-skip-tls-verify": True},
            }
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [
            {
                "name": "virtrigaud-dev",
                "context": {"cluster": "virtrigaud-dev", "user": user, "namespace": "default"},
            }
        ],
        "current-context": "virtrigaud-dev",
    }
    _write_private(path, yaml.safe_dump(config, sort_keys=False))


def write_token_file(path: Path, rows: Sequence[tuple[str, str, str, Sequence[str]]]) -> None:
    """Write (token, user, uid, groups) rows; replaced atomically, as kubelite may be reading."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for token, user, uid, groups in rows:
        writer.writerow([token, user, uid, ",".join(groups)])
    _write_private(path, out.getvalue())


def read_token_file(path: Path) -> list[tuple[str, str, str, tuple[str, ...]]]:
    rows = []
    for row in csv.reader(io.StringIO(path.read_text())):
        if len(row) >= 3:
            groups = tuple(g for g in (row[3] if len(row) > 3 else "").split(",") if g)
            rows.append((row[0], row[1], row[2], groups))
    return rows


def add_user(info: KubeInfo, name: str, groups: Sequence[str]) -> KubeUser:
    """Give `name` (with `groups`) a token and a kubeconfig; a known name keeps its token."""
    if not info.rbac or not info.token_file:
        raise StackError(
            "kube",
            "the API server runs without RBAC, so it authenticates no one",
            "start it with `virtrigaud dev up --rbac` (DevStack config kube_rbac=True)",
        )
    path = Path(info.token_file)
    rows = read_token_file(path)
    token = next((t for t, user, _, _ in rows if user == name), None) or new_token()
    rows = [r for r in rows if r[1] != name]
    rows.append((token, name, name, tuple(groups)))
    write_token_file(path, rows)
    kubeconfig = path.parent / "users" / f"{_file_name(name)}.kubeconfig"
    kubeconfig.parent.mkdir(exist_ok=True)
    write_kubeconfig(kubeconfig, info.server, token, user=name)
    return KubeUser(name, tuple(groups), token, kubeconfig)


def _file_name(user: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", user)


def _write_private(path: Path, text: str) -> None:
    # Tokens live in these files: readable by the owner only, and never half-written.
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    tmp.replace(path)
