"""How a shard reaches the Kubernetes API from whichever Ray node it runs on.

A shard may run on another machine than the controller that created it, so it never
relies on the controller's environment: either the controller named a kubeconfig file
(then it must be readable on the shard's node: same host, or a path every node mounts),
or none, and the shard uses the ServiceAccount of the pod it runs in (token file + CA,
KUBERNETES_SERVICE_HOST), the way a KubeRay worker pod with the chart's ServiceAccount
has it. The token follows its file, so a rotated token is picked up. Provider Secrets are
read with these credentials by the shard that reconciles the VM (see resolve.py).

There is no fallback to ~/.kube/config: a shard without credentials fails to start and
says which node lacks what.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from virtrigaud.kube.client import KubeClient, load_in_cluster, load_kubeconfig, service_account_dir


class NoKubeCredentials(Exception):
    """The shard's node has neither the kubeconfig it was given nor a ServiceAccount."""


def _node() -> str:
    return os.environ.get("RAY_NODE_IP_ADDRESS") or socket.gethostname()


def shard_kube_client(kubeconfig: str | None) -> KubeClient:
    if kubeconfig:
        if not os.access(kubeconfig, os.R_OK):
            raise NoKubeCredentials(
                f"kubeconfig {kubeconfig} (given to the controller by --kubeconfig or "
                f"KUBECONFIG) is not readable on the shard's node {_node()}: mount it at the "
                "same path on every Ray node, or run the controller without a kubeconfig so "
                "shards use their pod's ServiceAccount"
            )
        return KubeClient(load_kubeconfig(kubeconfig))
    sa = service_account_dir()
    missing = [
        what
        for what, ok in (
            ("KUBERNETES_SERVICE_HOST", bool(os.environ.get("KUBERNETES_SERVICE_HOST"))),
            (str(sa / "token"), (sa / "token").is_file()),
            (str(sa / "ca.crt"), Path(sa / "ca.crt").is_file()),
        )
        if not ok
    ]
    if missing:
        raise NoKubeCredentials(
            f"no kubeconfig was given and the shard's node {_node()} has no in-cluster "
            f"ServiceAccount ({', '.join(missing)} missing): run the Ray worker pods with "
            "the chart's ServiceAccount (automountServiceAccountToken), or give the "
            "controller a --kubeconfig readable on every node"
        )
    return KubeClient(load_in_cluster())


def kubeconfig_for_shards(given: str | None) -> str | None:
    """The kubeconfig the controller itself uses, for its shards; None means in-cluster.

    The same precedence as `KubeClient.from_kubeconfig`: --kubeconfig, $KUBECONFIG, the
    pod's ServiceAccount, ~/.kube/config.
    """
    if given:
        return str(Path(given).resolve())
    if os.environ.get("KUBECONFIG"):
        return str(Path(os.environ["KUBECONFIG"]).resolve())
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return None
    home = Path("~/.kube/config").expanduser()
    return str(home) if home.exists() else None
