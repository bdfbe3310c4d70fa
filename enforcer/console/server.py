"""ConsoleServer: the console's HTTP(S) listener, on the service's own
asyncio loop (so it shares the pipeline, its store and its approvals
watchers without any cross-thread calls).

The socket is bound here rather than by uvicorn, so a busy or invalid
address is a ConfigError naming `console.listen` (uvicorn itself would log
and exit the process), and a port of 0 resolves to the bound one. uvicorn
never installs signal handlers: the service owns SIGINT/SIGTERM/SIGHUP and
calls stop().
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Generator

import uvicorn

from enforcer.config import ServiceConfig
from enforcer.console.app import Console
from enforcer.console.security import SecurityHeaders
from enforcer.errors import ConfigError
from enforcer.identity.authenticate import Authenticator
from enforcer.pipeline.pipeline import Pipeline

log = logging.getLogger(__name__)

WILDCARD_HOSTS = ("", "0.0.0.0", "::", "[::]")
STOP_GRACE_S = 5.0


class _Uvicorn(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The service handles signals; uvicorn's would replace its handlers.
        yield


def split_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"console.listen: {listen!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def bind(listen: str) -> socket.socket:
    host, port = split_listen(listen)
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, address = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
            sock.listen(128)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
    except OSError as e:
        raise ConfigError(f"console.listen: cannot serve the console on {listen}: {e.strerror or e}: change "
                          "`console.listen` in the config file (or remove it to serve no console)") from None
    return sock


class ConsoleServer:
    def __init__(self, config: ServiceConfig, pipeline: Pipeline, authenticator: Authenticator) -> None:
        if config.console.listen is None:
            raise ConfigError("console.listen: not set, so there is no console to serve")
        self.config = config
        self.tls = config.tls
        self._closing = asyncio.Event()
        self.console = Console(config, pipeline, authenticator, secure_cookies=self.tls is not None,
                               closing=self._closing)
        self._sock: socket.socket | None = None
        self._server: _Uvicorn | None = None
        self._task: asyncio.Task[None] | None = None
        self._url = ""

    def _allowed_hosts(self, host: str) -> list[str]:
        """Host headers the console answers (DNS rebinding: a page on another
        name that resolves to this address is refused)."""
        if host in WILDCARD_HOSTS and self.config.console.public_url is None:
            return ["*"]
        hosts = {"localhost", "127.0.0.1", "[::1]", "::1"}
        if host not in WILDCARD_HOSTS:
            hosts.add(host if ":" not in host else f"[{host}]")
        if self.config.console.public_url is not None:
            from urllib.parse import urlsplit
            public = urlsplit(self.config.console.public_url).hostname
            if public:
                hosts.add(public if ":" not in public else f"[{public}]")
        return sorted(hosts)

    async def start(self) -> None:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        listen = self.config.console.listen
        assert listen is not None
        host, _ = split_listen(listen)
        self._sock = bind(listen)
        bound = self._sock.getsockname()
        scheme = "https" if self.tls is not None else "http"
        shown = host if host not in WILDCARD_HOSTS else "127.0.0.1"
        self._url = f"{scheme}://{f'[{shown}]' if ':' in shown else shown}:{bound[1]}"
        app = SecurityHeaders(TrustedHostMiddleware(self.console.app(), allowed_hosts=self._allowed_hosts(host)))
        config = uvicorn.Config(
            app, lifespan="off", log_level="warning", access_log=False, server_header=False, date_header=True,
            proxy_headers=False, timeout_graceful_shutdown=STOP_GRACE_S,
            ssl_certfile=str(self.tls.cert) if self.tls is not None else None,
            ssl_keyfile=str(self.tls.key) if self.tls is not None else None,
        )
        try:
            config.load()  # a bad certificate is a ConfigError now, not a dead task later
        except (OSError, ValueError) as e:
            self._sock.close()
            raise ConfigError(f"tls: the console cannot load the certificate or key: {e}") from None
        self._server = _Uvicorn(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]), name="aecl-console")
        while not self._server.started:
            if self._task.done():
                self._sock.close()
                error = self._task.exception()
                raise ConfigError(f"console.listen: the console did not start on {listen}: {error}")
            await asyncio.sleep(0.01)
        log.info("approver console on %s", self._url)

    @property
    def url(self) -> str:
        """The bound base URL (the port resolved when console.listen asked for 0)."""
        return self._url

    async def stop(self) -> None:
        self._closing.set()  # every SSE stream ends, so the connections can close
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None


__all__ = ["ConsoleServer", "bind", "split_listen"]
