"""The full ``sona`` command line: the library's commands plus ``serve``, ``consume`` and ``demo-events``.

``sona_app.cli`` holds the jobs, which need only the library (``db``, ``fit``,
``train-adapters``, ``evaluate``); this module adds the ones that run the
services or the bridge, which ``sona_app`` may not import. The console script
``sona`` points here. Exit codes are those documented in :mod:`sona_app.cli`.
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path
from typing import Annotated, Literal

import typer

from serving._fatal import run_bentoml, serving_config_error
from serving._reuseport import serve_command
from sona_app.cli import EXIT_FAILED, EXIT_USAGE, settings_or_exit
from sona_app.cli import app as library_app
from sona_app.settings import Settings

__all__ = ["app", "main"]

app = typer.Typer(
    help="sona: personalization for a video-streaming media gateway (library jobs, services, bridge).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # click's plain help wraps long words; rich's cuts them off with "…"
)
app.add_typer(library_app)

ROOT = Path(__file__).resolve().parents[1]
ServiceName = Literal["all", "sona", "playback", "discovery"]
_TARGETS: dict[str, str] = {
    "all": "serving.gateway:Gateway",
    "sona": "serving.sona_service:SonaService",
    "playback": "serving.playback:PlaybackService",
    "discovery": "serving.discovery:Discovery",
}
#: ``@bentoml.service(name=...)`` of each target, for BentoML's per-service config.
_SERVICE_NAMES: dict[str, str] = {
    "all": "sona-gateway",
    "sona": "sona",
    "playback": "playback",
    "discovery": "sona-discovery",
}


def _bind_error(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be bound right now (in use, no such address), or None.

    Checked before BentoML starts, whose own failure is a multi-process traceback.
    A port can still be taken between this check and BentoML's bind; that rare
    race ends in BentoML's error.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return f"unknown host ({exc.strerror})"
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will
        try:
            sock.bind(address)
        except OSError as exc:
            return "the port is already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
    return None


@app.command("serve", short_help="Run the HTTP services with BentoML.")
def serve(
    service: Annotated[
        str,
        typer.Option(
            "--service",
            help="'all' (SONA + playback + discovery on one port), or 'sona', 'playback', 'discovery'.",
        ),
    ] = "all",
    host: Annotated[str, typer.Option("--host", help="Interface to bind; 0.0.0.0 for all.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port.")] = 3000,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=1,
            help="Worker processes (default 1); they share jobs and state through the database.",
        ),
    ] = None,
) -> None:
    """Run the HTTP services with BentoML until SIGINT/SIGTERM.

    Configuration comes from the environment (DATABASE_URL, REDIS_URL,
    KAFKA_BROKERS, JWT_SECRET, SONA_MODEL_DIR; the README lists them all): with KAFKA_BROKERS set,
    playback publishes to Kafka (run `sona consume` too); otherwise events
    reach sona through the in-process bus. The model in SONA_MODEL_DIR is
    loaded (or fitted on first start). API docs at /api/v1/docs.
    """
    if service not in _TARGETS:
        raise typer.BadParameter(f"expected one of {', '.join(_TARGETS)}", param_hint="--service")
    refused = serving_config_error(settings_or_exit())  # fail fast (exit 2), before BentoML starts
    if refused is not None:
        typer.echo(refused, err=True)
        raise typer.Exit(EXIT_USAGE)
    busy = _bind_error(host, port)
    if busy is not None:
        typer.echo(f"error: cannot listen on {host}:{port}: {busy}; choose another --port", err=True)
        raise typer.Exit(EXIT_USAGE)
    cmd, listen_env = serve_command(_TARGETS[service], host, port)
    env = {**os.environ, "BENTOML_DO_NOT_TRACK": os.environ.get("BENTOML_DO_NOT_TRACK", "True"), **listen_env}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    if workers is not None:  # BentoML reads the worker count from its config; the last option wins
        option = f'services."{_SERVICE_NAMES[service]}".workers={workers}'  # quoted: names with '-'
        env["BENTOML_CONFIG_OPTIONS"] = f"{env.get('BENTOML_CONFIG_OPTIONS', '')} {option}".strip()
    raise typer.Exit(run_bentoml(cmd, env))  # 2 if a worker stopped it on a configuration error


@app.command("consume", short_help="Kafka playback events -> viewing events.")
def consume(
    group_id: Annotated[str, typer.Option("--group-id", help="Kafka consumer group.")] = "sona-playback",
    max_batch: Annotated[
        int, typer.Option("--max-batch", min=1, help="Messages per poll and write.")
    ] = 20_000,
    metrics_port: Annotated[
        int, typer.Option("--metrics-port", min=0, help="Serve Prometheus metrics on this port (0: off).")
    ] = 0,
    exit_when_idle: Annotated[
        float | None, typer.Option("--exit-when-idle", help="Stop after this many idle seconds.")
    ] = None,
    upgrade: Annotated[
        bool, typer.Option("--upgrade/--no-upgrade", help="Run database migrations at start.")
    ] = True,
) -> None:
    """Consume playback events from Kafka into sona viewing events (DATABASE_URL).

    Reads `{KAFKA_TOPIC_PREFIX}.position-updated` and `.session-ended` from
    KAFKA_BROKERS, writes one viewing event per session, advanced to its furthest
    progress once per batch (idempotent),
    dead-letters undecodable messages and commits offsets only after the write.
    Stops cleanly on SIGINT/SIGTERM. Exit 2 when KAFKA_BROKERS is unset.
    """
    from playback_bridge.consumer import main as consumer_main

    settings = settings_or_exit()
    if not settings.kafka_brokers:
        typer.echo("error: KAFKA_BROKERS is not set; the consumer needs a broker", err=True)
        raise typer.Exit(EXIT_USAGE)
    argv = ["--group-id", group_id, "--max-batch", str(max_batch), "--metrics-port", str(metrics_port)]
    if exit_when_idle is not None:
        argv += ["--exit-when-idle", str(exit_when_idle)]
    if not upgrade:
        argv.append("--no-upgrade")
    raise typer.Exit(consumer_main(argv))


@app.command("demo-events", short_help="Play synthetic playback traffic at a server.")
def demo_events(
    url: Annotated[
        str, typer.Option("--url", help="Base URL of a running `sona serve`.")
    ] = "http://127.0.0.1:3000",
    users: Annotated[int, typer.Option("--users", min=1, help="How many demo users watch.")] = 5,
    user_prefix: Annotated[
        str, typer.Option("--user-prefix", help="Demo user ids are PREFIX0, PREFIX1 and so on.")
    ] = "demo-",
    sessions: Annotated[int, typer.Option("--sessions", min=1, help="Viewings per user.")] = 3,
    updates: Annotated[int, typer.Option("--updates", min=1, help="Position updates per viewing.")] = 3,
    seed: Annotated[int, typer.Option("--seed", help="Seed of durations and completion rates.")] = 0,
    jwt_secret: Annotated[
        str | None,
        typer.Option(
            "--jwt-secret",
            envvar="JWT_SECRET",
            help="Secret to mint a service token; default JWT_SECRET, else the quickstart's dev secret.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Play synthetic playback traffic against a running server.

    Each demo user fetches recommendations and watches some of them through
    the playback API (session, position updates, end), so viewing events flow
    to profiles as they would from real players. Prints one summary line;
    exit 1 if any request failed.
    """
    import httpx

    from serving._demo import play_demo_traffic

    secret = jwt_secret
    if not secret:
        dev = dev_secret_path(settings_or_exit())
        if not dev.exists():
            typer.echo("error: set JWT_SECRET (or --jwt-secret) to the server's secret", err=True)
            raise typer.Exit(EXIT_USAGE)
        secret = dev.read_text().strip()
    ids = [f"{user_prefix}{i}" for i in range(users)]
    try:
        stats = play_demo_traffic(
            url, secret, ids, sessions_per_user=sessions, updates_per_session=updates, seed=seed
        )
    except httpx.HTTPError as exc:  # transport errors: the server is not there
        typer.echo(f"error: cannot reach {url}: {exc}", err=True)
        raise typer.Exit(EXIT_FAILED) from exc
    typer.echo(stats.summary_line())
    for err in stats.errors:
        typer.echo(f"failed: {err}", err=True)
    if stats.failed_requests:
        raise typer.Exit(EXIT_FAILED)


def dev_secret_path(settings: Settings) -> Path:
    """Where the development JWT secret every dev-mode server of this data dir signs with is kept."""
    from serving._auth import dev_secret_path as path

    return path(settings)


@app.command("token", short_help="Mint a development JWT for a user or a service.")
def token(
    user_id: Annotated[
        str | None, typer.Argument(help="The token's subject (user id); optional with --service.")
    ] = None,
    service: Annotated[
        bool, typer.Option("--service", help="Add the 'sona:service' scope: may act for any user.")
    ] = False,
    ttl: Annotated[int, typer.Option("--ttl", min=1, help="Lifetime in seconds.")] = 24 * 3600,
) -> None:
    """Print an HS256 bearer token signed with the configured secret, for curl and notebooks.

    The secret is JWT_SECRET; without it, and only with SONA_DEV_MODE=1, the
    development secret in $SONA_DATA_DIR/dev-jwt-secret that every dev-mode
    server of that data dir (each worker, each replica, `make quickstart`)
    signs with; it is created on first use. With neither, it refuses (exit 2).
    Example:
    curl -H "Authorization: Bearer $(sona token u1)" URL
    """
    from serving._auth import SERVICE_SCOPE, issue_token

    if user_id is None and not service:
        typer.echo("error: give a USER_ID, or --service for a service token", err=True)
        raise typer.Exit(EXIT_USAGE)
    if user_id is not None and not user_id.strip():
        typer.echo("error: USER_ID is blank", err=True)
        raise typer.Exit(EXIT_USAGE)
    settings = settings_or_exit()
    secret = settings.jwt_secret
    if not secret:
        if not settings.dev_mode:
            typer.echo("error: JWT_SECRET is not set (and SONA_DEV_MODE is off); set one of them", err=True)
            raise typer.Exit(EXIT_USAGE)
        from serving._auth import dev_jwt_secret

        secret = dev_jwt_secret(settings)  # the dev-mode servers of this data dir read the same file
    scopes = (SERVICE_SCOPE,) if service else ()
    typer.echo(issue_token(user_id or "sona-service", secret, ttl_seconds=ttl, scopes=scopes))


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
