"""Regenerate the provider.v1 Python module from proto/provider/v1/provider.proto.

Run through `make proto`; a test fails when the checked-in module and the .proto differ.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
PROTO = "provider/v1/provider.proto"
OUT = ROOT / "virtrigaud" / "providers" / "remote" / "pb"


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        code = protoc.main(
            ["protoc", f"-I{PROTO_DIR}", f"--python_out={tmp}", f"--pyi_out={tmp}", PROTO]
        )
        if code != 0:
            print(f"protoc failed with exit code {code}", file=sys.stderr)
            return code
        for suffix in ("provider_pb2.py", "provider_pb2.pyi"):
            shutil.copy(Path(tmp) / "provider" / "v1" / suffix, OUT / suffix)
    print(f"wrote {OUT}/provider_pb2.py and .pyi")
    return 0


if __name__ == "__main__":
    sys.exit(main())
