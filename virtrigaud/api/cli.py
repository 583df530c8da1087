"""`virtrigaud crds`: print or write the CRDs generated from the models; `crds apply`."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Annotated

import typer

from virtrigaud.api import field_support_doc
from virtrigaud.api.crdgen import rendered_crds, write_crds

crds_app = typer.Typer(
    help="Print (or write) the CRDs generated from the API models; `apply` them to a cluster.",
    invoke_without_command=True,
    no_args_is_help=False,
)


@crds_app.callback()
def crds_command(
    ctx: typer.Context,
    output_dir: Annotated[
        Path | None, typer.Option("--output-dir", help="Write one file per CRD here.")
    ] = None,
) -> None:
    """Print all CRDs as one multi-document YAML stream, or write one file each to output_dir."""
    if ctx.invoked_subcommand is not None:
        return
    if output_dir is not None:
        for path in write_crds(output_dir):
            print(path)
        return
    sys.stdout.write("---\n".join(rendered_crds().values()))


@crds_app.command(
    "apply",
    help="Server-side apply this version's CRDs; run it before `helm upgrade` (Helm never "
    "upgrades the chart's crds/). Prints each CRD: created, configured or unchanged.",
)
def crds_apply_command(
    kubeconfig: Annotated[
        Path | None,
        typer.Option(
            "--kubeconfig",
            envvar="KUBECONFIG",
            help="Kubeconfig of the cluster (default: in-cluster, else ~/.kube/config).",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Server dry run: validate, change nothing.")
    ] = False,
) -> None:
    """Bring the cluster's CRDs to this version's (virtrigaud/api/crds_apply.py)."""
    from virtrigaud.api.crds_apply import CrdApplyError, apply_crds
    from virtrigaud.kube.client import KubeClient

    async def run() -> list[str]:
        kube = KubeClient.from_kubeconfig(str(kubeconfig) if kubeconfig else None)
        try:
            return [f"{r.name}: {r.outcome}" for r in await apply_crds(kube, dry_run=dry_run)]
        finally:
            await kube.close()

    try:
        lines = asyncio.run(run())
    except CrdApplyError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(1) from e
    for line in lines:
        typer.echo(line)


def field_support_command(output: Path | None = None) -> None:
    """Print (or write to output) the field support table as Markdown."""
    if output is not None:
        field_support_doc.write(output)
        print(output)
        return
    sys.stdout.write(field_support_doc.render())
