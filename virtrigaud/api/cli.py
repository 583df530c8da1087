"""`virtrigaud crds`: print or write the CRDs generated from the models."""

from __future__ import annotations

import sys
from pathlib import Path

from virtrigaud.api import field_support_doc
from virtrigaud.api.crdgen import rendered_crds, write_crds


def crds_command(output_dir: Path | None = None) -> None:
    """Print all CRDs as one multi-document YAML stream, or write one file each to output_dir."""
    if output_dir is not None:
        for path in write_crds(output_dir):
            print(path)
        return
    sys.stdout.write("---\n".join(rendered_crds().values()))


def field_support_command(output: Path | None = None) -> None:
    """Print (or write to output) the field support table as Markdown."""
    if output is not None:
        field_support_doc.write(output)
        print(output)
        return
    sys.stdout.write(field_support_doc.render())
