"""`virtrigaud provider serve`: one of our providers as a provider.v1 server with mTLS."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import Annotated

import typer
from prometheus_client import start_http_server

from virtrigaud.providers.calls import RateLimit
from virtrigaud.providers.registry import BUILTIN_TYPES, ProviderConfig, build_provider
from virtrigaud.providers.remote.server import ProviderServer, ServeOptions, UnlimitedLimiter
from virtrigaud.providers.remote.tls import (
    FileSource,
    SanAllowList,
    TLSConfigError,
    TLSSource,
    tls_version,
)
from virtrigaud.shards.logs import LOG_LEVELS, setup_process_logging

provider_app = typer.Typer(help="Run a provider as a provider.v1 gRPC server (remote mode).")


def _pairs(values: list[str], option: str) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{option} takes KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def read_credentials(directory: Path | None) -> dict[str, str]:
    """A mounted credentials Secret: one file per key (dotfiles and directories skipped)."""
    if directory is None:
        return {}
    if not directory.is_dir():
        raise typer.BadParameter(f"--credentials-dir {directory} is not a directory")
    return {
        p.name: p.read_text().strip()
        for p in sorted(directory.iterdir())
        if p.is_file() and not p.name.startswith(".")
    }


def tls_source(
    tls_dir: Path | None, cert: Path | None, key: Path | None, ca: Path | None
) -> TLSSource | None:
    files = (cert, key, ca)
    if tls_dir is not None and any(files):
        raise typer.BadParameter("give --tls-dir or the three --tls-* files, not both")
    if tls_dir is not None:
        return FileSource.directory(tls_dir)
    if any(files):
        if not all(files):
            raise typer.BadParameter("--tls-cert, --tls-key and --tls-ca go together")
        assert cert and key and ca
        return FileSource(cert, key, ca)
    return None


@provider_app.command("serve")
def serve_command(
    type_: Annotated[
        str, typer.Option("--type", help=f"Hypervisor type: {', '.join(BUILTIN_TYPES)}.")
    ],
    endpoint: Annotated[str, typer.Option(help="The hypervisor endpoint (URL or libvirt URI).")],
    listen: Annotated[str, typer.Option(help="host:port to serve provider.v1 on.")] = (
        "127.0.0.1:9443"
    ),
    name: Annotated[
        str, typer.Option(help="namespace/name of the Provider (labels, logs).")
    ] = "remote/provider",
    credentials_dir: Annotated[
        Path | None,
        typer.Option(help="A mounted credentials Secret: one file per key (username, ...)."),
    ] = None,
    insecure_skip_verify: Annotated[
        bool, typer.Option(help="Skip TLS verification of the hypervisor endpoint (tests).")
    ] = False,
    default: Annotated[
        list[str], typer.Option(help="Provider defaults, KEY=VALUE (datastore, node, ...).")
    ] = [],  # noqa: B006 - typer reads the default, it is never mutated
    tls_dir: Annotated[
        Path | None, typer.Option(help="A mounted TLS Secret: tls.crt, tls.key, ca.crt.")
    ] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="Server certificate (PEM).")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="Server key (PEM).")] = None,
    tls_ca: Annotated[Path | None, typer.Option(help="CA bundle for client certs.")] = None,
    allowed_san: Annotated[
        list[str],
        typer.Option(help="Client certificate SANs allowed to call (globs); repeatable."),
    ] = [],  # noqa: B006
    tls_min_version: Annotated[str, typer.Option(help="Lowest TLS version: 1.3 or 1.2.")] = "1.3",
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Serve PLAINTEXT gRPC (no TLS at all).")
    ] = False,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus /metrics on this port.")
    ] = None,
    metrics_address: Annotated[str, typer.Option(help="Address for /metrics.")] = "127.0.0.1",
    health_port: Annotated[
        int | None,
        typer.Option(
            help="Also serve grpc.health.v1 alone, PLAINTEXT, on this port (same host as "
            "--listen), for the kubelet's grpc probes."
        ),
    ] = None,
    grace: Annotated[
        float, typer.Option(help="Seconds calls in flight may take to finish on shutdown.")
    ] = 10.0,
    max_workers: Annotated[int, typer.Option(help="Threads for blocking SDK calls.")] = 16,
    log_level: Annotated[str, typer.Option(help="debug, info, warn or error.")] = "info",
    log_format: Annotated[
        str, typer.Option(help="text, or json: one JSON object per line.")
    ] = "text",
) -> None:
    """Serve one hypervisor endpoint over provider.v1 (gRPC) with mTLS.

    TLS is required: --tls-dir or the three --tls-* files; without them the server does not
    start. --insecure serves plaintext and says so in its log."""
    try:
        setup_process_logging(log_level, log_format, component="provider-server", provider=name)
    except ValueError as e:
        flag = "--log-level" if log_level not in LOG_LEVELS else "--log-format"
        typer.echo(f"error: {flag}: {e}", err=True)
        raise typer.Exit(2) from None
    if type_ not in BUILTIN_TYPES:
        raise typer.BadParameter(f"--type must be one of {', '.join(BUILTIN_TYPES)}")
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise typer.BadParameter(f"--listen takes host:port, got {listen!r}")
    source = tls_source(tls_dir, tls_cert, tls_key, tls_ca)
    if source is None and not insecure:
        typer.echo(
            "error: no TLS configuration: pass --tls-dir (a mounted TLS Secret with tls.crt, "
            "tls.key, ca.crt) or --tls-cert/--tls-key/--tls-ca; plaintext only with --insecure",
            err=True,
        )
        raise typer.Exit(2)
    if source is not None and insecure:
        raise typer.BadParameter("--insecure and TLS files contradict each other; pick one")
    try:
        tls_version(tls_min_version)
        if source is not None:
            source.load()
    except TLSConfigError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    config = ProviderConfig(
        type=type_,
        key=name,
        endpoint=endpoint,
        credentials=read_credentials(credentials_dir),
        rate=RateLimit(qps=1e9, burst=1_000_000),
        insecure_skip_verify=insecure_skip_verify,
        defaults=_pairs(default, "--default"),
        max_workers=max_workers,
    )
    options = ServeOptions(
        host=host,
        port=int(port),
        tls=source,
        insecure=insecure,
        allowed_sans=SanAllowList.of(allowed_san),
        tls_min_version=tls_min_version,
        grace=grace,
        health_port=health_port,
    )
    if metrics_port is not None:
        start_http_server(metrics_port, addr=metrics_address)
    asyncio.run(_serve(config, options))


async def _serve(config: ProviderConfig, options: ServeOptions) -> None:
    server = ProviderServer(build_provider(config, UnlimitedLimiter()), options)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Handlers first: a SIGTERM that arrives while the server starts still stops it gently.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await server.start()
    print(f"serving {config.type} provider.v1 on {server.address}", flush=True)
    await stopping.wait()
    logging.info("provider server: shutting down (grace %.0f s)", options.grace)
    await server.stop()
