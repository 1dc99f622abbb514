"""One listening socket per BentoML worker (SO_REUSEPORT), so N workers share the load.

BentoML 1.4 hands every worker the same inherited listening socket. Each
worker's event loop accepts every pending connection when it wakes, so the
connections of a client (or a load balancer's keep-alive pool) opened together
all land on one worker, and a second worker adds little (bentoml/BentoML#5426).
With SO_REUSEPORT each worker listens on a socket of its own on the same port,
and the kernel spreads new connections across them by their address hash.

How: ``python -m serving._reuseport serve ...`` runs BentoML's CLI with the API
server's circus socket marked SO_REUSEPORT, which circus then leaves unbound;
each worker, when its service module is imported, binds a socket of its own and
puts it in place of the inherited one (:func:`adopt_listener`) before uvicorn
starts serving on that descriptor.
"""

from __future__ import annotations

import os
import socket
import sys

#: ``host:port`` the workers bind; set by :func:`serve_command`'s environment.
LISTEN_ENV = "SONA_REUSEPORT_LISTEN"
_API_SOCKET = "_bento_api_server"  # BentoML's circus socket name for the API server
_BACKLOG = 2048


def serve_command(target: str, host: str, port: int) -> tuple[list[str], dict[str, str]]:
    """The command and extra environment that serve ``target`` with one socket per worker."""
    cmd = [sys.executable, "-m", "serving._reuseport", "serve", target, "--host", host, "--port", str(port)]
    return cmd, {LISTEN_ENV: f"{host}:{port}"}


def adopt_listener() -> bool:
    """In a BentoML worker: replace the inherited, unbound socket by a bound SO_REUSEPORT one.

    Does nothing (returns False) outside a worker started by :func:`serve_command`,
    e.g. under a plain ``bentoml serve`` whose shared socket is already bound.
    """
    spec = os.environ.get(LISTEN_ENV)
    if not spec or "--fd" not in sys.argv:
        return False
    fd = int(sys.argv[sys.argv.index("--fd") + 1])
    inherited = socket.socket(fileno=os.dup(fd))
    try:
        if inherited.getsockname()[1] != 0:  # bound by the arbiter: the shared-socket mode
            return False
        host, _, port = spec.rpartition(":")
        own = socket.socket(inherited.family, socket.SOCK_STREAM)
    finally:
        inherited.close()
    own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    own.bind((host, int(port)))
    own.listen(_BACKLOG)
    os.dup2(own.fileno(), fd)  # uvicorn serves on ``fd``: now this worker's own socket
    own.close()
    return True


def _main() -> None:
    from circus import sockets

    init = sockets.CircusSocket.__init__

    def reuseport_init(self: sockets.CircusSocket, *args: object, **kwargs: object) -> None:
        if kwargs.get("name") == _API_SOCKET and sys.platform.startswith("linux"):
            kwargs["so_reuseport"] = True  # circus then leaves it unbound: each worker binds its own
        init(self, *args, **kwargs)

    sockets.CircusSocket.__init__ = reuseport_init  # type: ignore[method-assign]
    from bentoml_cli.cli import cli

    cli(prog_name="bentoml")


if __name__ == "__main__":
    _main()
