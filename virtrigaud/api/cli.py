"""`virtrigaud crds`: print or write the CRDs generated from the models."""

from __future__ import annotations

import sys
from pathlib import Path

from virtrigaud.api.crdgen import rendered_crds, write_crds


def crds_command(output_dir: Path | None = None) -> None:
    """Print all CRDs as one multi-document YAML stream, or write one file each to output_dir."""
    if output_dir is not None:
        for path in write_crds(output_dir):
            print(path)
        return
    sys.stdout.write("---\n".join(rendered_crds().values()))
