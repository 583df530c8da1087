"""The `virtrigaud` command line: one entry point, each area contributes its commands."""

from __future__ import annotations

import typer

from virtrigaud import API_VERSION, __version__
from virtrigaud.api.cli import crds_app, field_support_command
from virtrigaud.demo import demo_command
from virtrigaud.dev.cli import dev_app
from virtrigaud.providers.remote.cli import provider_app
from virtrigaud.run import run_command, shards_app

app = typer.Typer(
    name="virtrigaud",
    help="VirtRigaud: a sharded Kubernetes operator for VMs on vSphere, libvirt/KVM and Proxmox.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command()
def version() -> None:
    """Print the VirtRigaud version and the API version it serves."""
    typer.echo(f"virtrigaud {__version__} ({API_VERSION})")


app.add_typer(crds_app, name="crds")
app.command(
    name="field-support",
    help="Print (or write) which fields each Provider type honours, as Markdown.",
)(field_support_command)
app.add_typer(dev_app, name="dev", help="The local dev stack: API server, simulators, Redis, Ray.")
app.command(name="run", help="Run the controller: leader election, coordinator, shards.")(
    run_command
)
app.add_typer(shards_app, name="shards", help="Inspect and change the shard count.")
app.add_typer(
    provider_app, name="provider", help="Run a provider remotely (provider.v1 gRPC with mTLS)."
)
app.command(name="demo", help="Dev stack + sharded controller + sample VMs converging.")(
    demo_command
)


if __name__ == "__main__":
    app()
