"""``make quickstart``: train, then serve SONA, playback and discovery on one port, on SQLite.

Steps (each reuses what a previous run left in ``SONA_DATA_DIR``):

1. data: ml-100k from ``$SONA_DATA_DIR/ml-100k``, ``$SONA_MOVIELENS`` or
   ``../shared/datasets/ml-100k``; otherwise (or with ``--synthetic``) the
   seeded synthetic catalog;
2. the base model (skipped when the database has a current model or
   ``SONA_MODEL_DIR`` holds one: resolved as every process resolves it);
3. LoRA adapters for the most active users (skipped when the last quickstart
   run of them finished; resumed when it was interrupted);
4. ``bentoml serve serving.gateway:Gateway`` on one port with the in-process
   event bus (``KAFKA_BROKERS`` is ignored here) and a dev JWT secret kept in
   the data dir; Redis from ``REDIS_URL`` or, if that does not answer, a
   private ``redis-server`` when one is installed;
5. prints the URLs, a dev JWT, how to mint more (``sona token``) and three
   ``curl`` commands, then serves until Ctrl-C. ``--check`` runs the commands
   instead and exits (0 if all got 2xx).

Steps 1-3 run in a child process (``--no-serve``), so the process that then
only waits on the server never imports torch or holds the engine (hundreds
of MB); the server loads the model itself.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from serving._auth import issue_token
from serving._launch import free_port, launch
from sona import SonaError
from sona_app.settings import Settings, load_settings

if TYPE_CHECKING:  # the training side's imports load torch: only prepare() pays for them
    from sona import Sona
    from sona_app.datasource import TrainingData

__all__ = ["QuickstartResult", "main", "prepare"]

ROOT = Path(__file__).resolve().parents[1]
GATEWAY = "serving.gateway:Gateway"
RUN_ID = "quickstart"
DEMO_DEVICE = "laptop"


def _say(msg: str) -> None:
    print(msg, flush=True)


@dataclass(frozen=True, slots=True)
class QuickstartResult:
    """What :func:`prepare` produced: settings to serve with, the demo user, what was reused."""

    settings: Settings
    jwt_secret: str
    user_id: str
    content_id: str
    query: str
    reused_model: bool
    reused_adapters: bool


def _settings() -> Settings:
    settings = load_settings()
    # The quickstart is the embedded path: dev mode, in-process bus.
    return replace(settings, dev_mode=True, kafka_brokers=())


def _data(settings: Settings, synthetic: bool) -> TrainingData:
    from sona_app.datasource import find_movielens, load_training_data, looks_like_movielens

    if not synthetic:
        local = settings.data_dir / "ml-100k"
        path = local if looks_like_movielens(local) else find_movielens(settings)
        if path is not None:
            return load_training_data(path)
    return load_training_data("synthetic")


def _jwt_secret(settings: Settings) -> str:
    """``JWT_SECRET`` if set, else the deployment's dev secret (kept 0600 in the data dir)."""
    from serving._auth import resolve_jwt_secret

    return resolve_jwt_secret(settings)  # dev mode: the one every server and `sona token` reads


def _most_active(engine: Sona, n: int) -> list[str]:
    counts = engine.history_["user_id"].value_counts(sort=True)
    return [str(u) for u in counts.index[:n]]


def prepare(*, synthetic: bool = False, adapters: int = 100, epochs: int | None = None) -> QuickstartResult:
    """Steps 1-3: model and adapters in ``SONA_DATA_DIR``, reused when already there."""
    from sona import Sona, SonaConfig
    from sona.lora import attach_adapters
    from sona.storage import Storage
    from sona_app.adapter_run import RunCheckpoint, run_adapter_training
    from sona_app.bootstrap import adapter_store, publish_model, resolve_model

    settings = _settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    storage = Storage(settings.database_url)
    try:
        storage.upgrade()
        model_dir = settings.engine_dir
        # The model the server will serve, resolved as every process resolves it: the current
        # published one, else SONA_MODEL_DIR's (then published), so adapters train on that one.
        resolved = resolve_model(settings, storage)
        reused_model = resolved is not None
        if resolved is not None:
            engine = resolved
            _say(f"[1/3] reusing the trained model {engine.model_id_} (the database's current model)")
        elif model_dir.exists() and any(model_dir.iterdir()):
            engine = Sona.load(model_dir)  # not a complete engine: let its error name the problem
        else:
            data = _data(settings, synthetic)
            _say(f"[1/3] training the base model on {data.source}: {len(data.events)} events")
            cfg = SonaConfig() if epochs is None else SonaConfig(epochs=epochs)
            t0 = time.perf_counter()
            engine = Sona(data.catalog, cfg).fit(data.events)
            storage.upsert_content(data.catalog)
            storage.add_events(data.events)
            engine.save(model_dir)
            publish_model(storage, model_dir, source=data.source)  # current: what the server resolves
            _say(f"      done in {time.perf_counter() - t0:.1f} s; saved to {model_dir}")
        checkpoint = RunCheckpoint(settings.data_dir / "runs", RUN_ID)
        reused_adapters = checkpoint.finished and reused_model
        store = adapter_store(settings, storage)
        if reused_adapters:
            attach_adapters(engine, store=store)  # the demo user's top title is the one served
            _say(f"[2/3] reusing the adapters in {settings.adapter_dir} (run record {checkpoint.done_path})")
        else:
            if not reused_model:
                checkpoint.reset()
            users = _most_active(engine, adapters)
            _say(f"[2/3] training LoRA adapters for the {len(users)} most active users")
            report = run_adapter_training(engine, users, checkpoint=checkpoint, store=store, force=True)
            _say(f"      {report.summary_line()}")
        done = RunCheckpoint(settings.data_dir / "runs", RUN_ID).done_path
        kept = [json.loads(line) for line in done.read_text().splitlines()] if done.exists() else []
        trained = [r["user_id"] for r in kept if r["outcome"] == "trained"]
        user_id = trained[0] if trained else _most_active(engine, 1)[0]
        top = engine.recommend(user_id, k=1)[0]
        title = engine.catalog[str(top.content_id)].title
        return QuickstartResult(
            settings=settings,
            jwt_secret=_jwt_secret(settings),
            user_id=user_id,
            content_id=str(top.content_id),
            query=_query(title),
            reused_model=reused_model,
            reused_adapters=reused_adapters,
        )
    finally:
        storage.dispose()


def _query(title: str) -> str:
    """A search query from a title: its first two words without the year."""
    words = [w for w in title.replace("(", " ").replace(")", " ").split() if not w.isdigit()]
    return " ".join(words[:2]) or "love"


# ----------------------------------------------------------------- Redis
def _redis_answers(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def _redis(settings: Settings) -> Iterator[str | None]:
    """A Redis URL that answers: ``REDIS_URL``, else a private ``redis-server`` stopped on exit, else None."""
    if _redis_answers(settings.redis_url):
        yield settings.redis_url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 10
        while not _redis_answers(url) and time.monotonic() < deadline:
            time.sleep(0.1)
        yield url if _redis_answers(url) else None
    finally:
        proc.terminate()
        proc.wait(10)


# ----------------------------------------------------------------- server
@contextmanager
def _gateway(
    env: dict[str, str], host: str, port: int, log_path: Path, timeout: float
) -> Iterator[subprocess.Popen[bytes]]:
    """The one-port gateway until the block ends; ``KAFKA_BROKERS`` is not passed on (in-process bus)."""
    with (
        log_path.open("a+b") as log,
        launch(GATEWAY, env, log=log, host=host, port=port, timeout=timeout, drop_env=("KAFKA_BROKERS",)) as (
            proc,
            _,
        ),
    ):
        yield proc


def curl_commands(base: str, token: str, result: QuickstartResult, *, playback: bool) -> list[str]:
    """Three copy-paste commands; ``--fail-with-body`` makes curl exit non-zero on a 4xx/5xx."""
    head = f"curl -sS --fail-with-body -H {shlex.quote('Authorization: Bearer ' + token)} "
    head += "-H 'Content-Type: application/json'"

    def post(path: str, body: dict[str, object]) -> str:
        return f"{head} -X POST {base}{path} -d {shlex.quote(json.dumps(body))}"

    cmds = [
        post("/api/v1/recommendations", {"user_id": result.user_id, "limit": 5}),
        post("/api/v1/search", {"query": result.query, "page_size": 5}),
    ]
    if playback:
        session = {
            "user_id": result.user_id,
            "content_id": result.content_id,
            "device_id": DEMO_DEVICE,
            "duration_seconds": 5400,
        }
        cmds.append(post("/api/v1/sessions", session))
    else:
        event = {"content_id": result.content_id, "completion_rate": 0.9, "timestamp": "2026-01-01T20:00:00Z"}
        cmds.append(post("/api/v1/profile/update", {"user_id": result.user_id, "viewing_events": [event]}))
    return cmds


def _run_checks(cmds: Sequence[str]) -> bool:
    ok = True
    for cmd in cmds:
        proc = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=60)
        _say(f"  {'ok  ' if proc.returncode == 0 else 'FAIL'} {cmd.split(' -X POST ', 1)[1].split(' ')[0]}")
        ok &= proc.returncode == 0
    return ok


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m serving.quickstart", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--synthetic", action="store_true", help="use the synthetic catalog even if ml-100k is present"
    )
    p.add_argument("--adapters", type=int, default=100, help="train adapters for this many most active users")
    p.add_argument("--epochs", type=int, default=None, help="base-model epochs (default: SonaConfig's)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=None, help="default: 3000 if free, else any free port")
    p.add_argument("--no-serve", action="store_true", help="train (or reuse) and exit")
    p.add_argument(
        "--check", action="store_true", help="serve, run the three curl commands, exit 0 if all 2xx"
    )
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the server to be ready")
    p.add_argument("--result-json", type=Path, default=None, help=argparse.SUPPRESS)  # the child's answer
    return p


_RESULT_FIELDS = ("user_id", "content_id", "query", "reused_model", "reused_adapters")


def _prepare_in_child(args: argparse.Namespace) -> QuickstartResult | int:
    """Run steps 1-3 in ``python -m serving.quickstart --no-serve``; its result, or its exit code.

    The child's output goes straight to this terminal. SIGINT reaches both
    processes from the terminal; a SIGTERM to this one is passed on, and the
    child finishes its adapter chunk and exits 130 as it would alone.
    """
    settings = _settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    answer = settings.data_dir / f".quickstart-{os.getpid()}.json"
    cmd = [sys.executable, "-m", "serving.quickstart", "--no-serve", "--result-json", str(answer)]
    cmd += ["--adapters", str(args.adapters)] + (["--synthetic"] if args.synthetic else [])
    cmd += [] if args.epochs is None else ["--epochs", str(args.epochs)]
    child = subprocess.Popen(cmd)
    try:
        while True:
            try:
                code = child.wait()
                break
            except KeyboardInterrupt:
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)
        if code != 0:
            return code
        fields = json.loads(answer.read_text())
    finally:
        answer.unlink(missing_ok=True)
    return QuickstartResult(settings=settings, jwt_secret=_jwt_secret(settings), **fields)


def _port(host: str, wanted: int | None) -> int:
    if wanted:
        return wanted
    with socket.socket() as s:
        return 3000 if s.connect_ex((host, 3000)) != 0 else free_port(host)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    if not args.no_serve:
        prepared = _prepare_in_child(args)
        if isinstance(prepared, int):
            return prepared
        return _serve(args, prepared, t0)
    try:
        result = prepare(synthetic=args.synthetic, adapters=args.adapters, epochs=args.epochs)
    except SonaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun to continue (finished adapters are kept)", file=sys.stderr)
        return 130
    if args.result_json is not None:
        args.result_json.write_text(json.dumps({f: getattr(result, f) for f in _RESULT_FIELDS}))
    else:
        _say(f"ready to serve after {time.perf_counter() - t0:.1f} s (--no-serve given)")
    return 0


def _serve(args: argparse.Namespace, result: QuickstartResult, t0: float) -> int:
    """Steps 4-5, in a process that holds no model: start the gateway, print how to call it, wait."""
    settings = result.settings
    with ExitStack() as stack:
        redis_url = stack.enter_context(_redis(settings))
        env = {
            "SONA_DATA_DIR": str(settings.data_dir),
            "DATABASE_URL": settings.database_url,
            "SONA_MODEL_DIR": str(settings.engine_dir),
            "JWT_SECRET": result.jwt_secret,
            "SONA_DEV_MODE": "1",
        }
        if redis_url:
            env["REDIS_URL"] = redis_url
        port = _port(args.host, args.port)
        base = f"http://{args.host}:{port}"
        _say(
            f"[3/3] starting SONA + playback + discovery on {base} (log: {settings.data_dir / 'gateway.log'})"
        )
        try:
            proc = stack.enter_context(
                _gateway(env, args.host, port, settings.data_dir / "gateway.log", args.timeout)
            )
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        token = issue_token(result.user_id, result.jwt_secret, ttl_seconds=24 * 3600)
        cmds = curl_commands(base, token, result, playback=redis_url is not None)
        _say("")
        _say(f"sona is up after {time.perf_counter() - t0:.1f} s: SONA, playback and discovery on one port")
        _say(f"  base URL   {base}")
        _say(f"  API docs   {base}/api/v1/docs   (OpenAPI: {base}/api/v1/openapi.json)")
        _say(f"  health     {base}/health   ready: {base}/ready   metrics: {base}/metrics")
        if redis_url is None:
            _say(
                "  note       Redis is not reachable and redis-server is not installed: playback answers 503"
            )
        secret_file = settings.data_dir / "dev-jwt-secret"
        _say(f"dev JWT for user {result.user_id!r} (valid 24 h; secret in {secret_file}):")
        _say(f"  {token}")
        mint = f"SONA_DEV_MODE=1 SONA_DATA_DIR={shlex.quote(str(settings.data_dir))} .venv/bin/sona token"
        if settings.jwt_secret:
            mint = ".venv/bin/sona token"  # the server signs with this shell's JWT_SECRET
        _say(f"more tokens: `{mint} USER_ID` for any user, `{mint} --service` for the sona:service scope")
        _say("try (recommendations, personalized search, start a playback session):")
        for cmd in cmds:
            _say(cmd)
        if args.check:
            return 0 if _run_checks(cmds) else 1
        _say("serving until Ctrl-C")
        try:
            while proc.poll() is None:
                time.sleep(0.5)
        except KeyboardInterrupt:
            _say("stopping")
            return 0
        print(f"error: the server exited with {proc.returncode}", file=sys.stderr)
        return 1
    return 0


def _terminate(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM stops as cleanly as Ctrl-C


if __name__ == "__main__":
    # Explicit: a shell starting us in the background may have left SIGINT ignored.
    signal.signal(signal.SIGINT, _terminate)
    signal.signal(signal.SIGTERM, _terminate)
    raise SystemExit(main())
