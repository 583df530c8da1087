"""pyVmomi's namespaces and login as Any: its dynamic types carry no useful annotations."""

from __future__ import annotations

from typing import Any

from pyVim.connect import SmartConnect as _smart_connect
from pyVmomi import vim as _vim
from pyVmomi import vmodl as _vmodl

vim: Any = _vim
vmodl: Any = _vmodl
smart_connect: Any = _smart_connect
