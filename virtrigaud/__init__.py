"""VirtRigaud: a sharded Kubernetes operator for virtual machines."""

__version__ = "0.1.0"

GROUP = "infra.virtrigaud.io"
VERSION = "v1beta1"
API_VERSION = f"{GROUP}/{VERSION}"
