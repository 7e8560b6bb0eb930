"""`evoforge ui`: the live dashboard on a local port (evoforge/dashboard)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

DEFAULT_PORT = 8765

errors = Console(stderr=True)


def ui(
    port: Annotated[int, typer.Option("--port", "-p", help="Port to serve on.")] = DEFAULT_PORT,
    host: Annotated[str, typer.Option("--host", help="Address to bind; other machines only read unless "
                                                      "--remote-answers.")] = "127.0.0.1",
    remote_answers: Annotated[bool, typer.Option(
        "--remote-answers", help="Let clients other than this machine answer approvals (still with the token).")] = False,
    config_file: Annotated[Path | None, typer.Option("--config", "-c", help="YAML run configuration (its "
                                                                            "database is the one shown).")] = None,
) -> None:
    """Serve the live dashboard: runs, their live view, nodes, cognition and pending approvals."""
    import uvicorn

    from evoforge.config import ConfigError, load_config
    from evoforge.dashboard.access import make_token
    from evoforge.dashboard.app import ROOT, create_app

    if not 0 < port < 65536:
        raise typer.BadParameter(f"expected a port in 1..65535, got {port}", param_hint="--port")
    try:
        config = load_config(config_file)
    except ConfigError as exc:
        errors.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(2) from exc
    token = make_token()
    app = create_app(config, token=token, remote_answers=remote_answers, standalone=True)
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    errors.print(f"EvoForge dashboard: http://{shown_host}:{port}{ROOT}/ (reading {escape(config.database_url or str(config.state_dir))})")
    errors.print(f"to answer approvals, open once: http://{shown_host}:{port}{ROOT}/?token={token}")
    uvicorn.run(app, host=host, port=port, log_level="warning")


def register(app: typer.Typer) -> None:
    """Add this module's command to the CLI."""
    app.command()(ui)
