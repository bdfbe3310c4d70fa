"""The in-sandbox connector bridge (standard library only: it runs under the
sandbox's /usr/bin/python3, bound read-only at /opt/aecl/bridge.py).

    python3 -I /opt/aecl/bridge.py --listen 127.0.0.1:3128 \\
        --socket /run/aecl/connector.sock -- ARGV...

Listens on a loopback TCP port of the sandbox's own network namespace (which
holds nothing but `lo`), relays every accepted connection byte for byte to
the execution's connector socket (the host-side proxy,
enforcer.connectors.proxy), and runs ARGV as its child with stdin, stdout and
stderr inherited and HTTP_PROXY/http_proxy pointing at the port, so that
standard HTTP clients reach the connectors unmodified. It listens before the
child starts, and exits with the child's exit status (128 + N when the child
was killed by signal N). It holds no secret: the proxy adds credentials on
the host side.

One thread, one selector: no thread per connection (the sandbox's pids
limit counts threads).
"""

from __future__ import annotations

import errno
import os
import selectors
import signal
import socket
import subprocess
import sys

_CHUNK = 64 << 10
# Bytes buffered per direction before reading from that side pauses.
_HIGH_WATER = 256 << 10


class _Direction:
    """src -> dst: bytes read from src not yet written to dst."""

    __slots__ = ("buf", "done", "dst", "eof", "src")

    def __init__(self, src: socket.socket, dst: socket.socket) -> None:
        self.src, self.dst = src, dst
        self.buf = bytearray()
        self.eof = False   # src said EOF (or failed)
        self.done = False  # nothing more will go this way


class _Relay:
    """One accepted TCP connection and its connector socket."""

    def __init__(self, sel: selectors.BaseSelector, tcp: socket.socket, unix: socket.socket) -> None:
        self.sel = sel
        self.socks = (tcp, unix)
        self.ways = (_Direction(tcp, unix), _Direction(unix, tcp))
        self.registered: dict[socket.socket, int] = {}
        self.closed = False
        for s in self.socks:
            s.setblocking(False)
        self.update()

    def _finish(self, way: _Direction) -> None:
        way.done = True
        way.buf.clear()
        try:
            way.dst.shutdown(socket.SHUT_WR)  # pass the EOF on
        except OSError:
            pass

    def on_event(self, sock: socket.socket, mask: int) -> None:
        for way in self.ways:
            if mask & selectors.EVENT_READ and way.src is sock and not way.eof:
                try:
                    data = sock.recv(_CHUNK)
                except (BlockingIOError, InterruptedError):
                    data = None
                except OSError:
                    data = b""
                if data == b"":
                    way.eof = True
                elif data:
                    if way.done:
                        pass  # the other side is gone: discard, keep draining
                    else:
                        way.buf += data
            if mask & selectors.EVENT_WRITE and way.dst is sock:
                pass  # flushed below
        for way in self.ways:
            if way.buf and not way.done:
                try:
                    n = way.dst.send(way.buf)
                    del way.buf[:n]
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    # dst is gone: this way is over; keep reading its source
                    # (and dropping it) so the other way can finish cleanly.
                    way.done = True
                    way.buf.clear()
            if way.eof and not way.buf and not way.done:
                self._finish(way)
        self.update()

    def update(self) -> None:
        if all(w.done and w.eof for w in self.ways):
            self.close()
            return
        for s in self.socks:
            mask = 0
            for way in self.ways:
                if way.src is s and not way.eof and len(way.buf) < _HIGH_WATER:
                    mask |= selectors.EVENT_READ
                if way.dst is s and way.buf and not way.done:
                    mask |= selectors.EVENT_WRITE
            old = self.registered.get(s, 0)
            if mask == old:
                continue
            if not mask:
                self.sel.unregister(s)
                del self.registered[s]
            elif not old:
                self.sel.register(s, mask, self)
                self.registered[s] = mask
            else:
                self.sel.modify(s, mask, self)
                self.registered[s] = mask
        if not self.registered:
            # Nothing left to wait for on either socket (both ways stuck on
            # a peer that will never read): give up on the connection.
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for s in self.socks:
            if s in self.registered:
                self.sel.unregister(s)
            s.close()
        self.registered.clear()


def _listen(address: str) -> socket.socket:
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    srv = socket.socket(family, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, int(port)))
    srv.listen(128)
    srv.setblocking(False)
    return srv


def _child_env(proxy: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("no_proxy", "http_proxy")}
    env["HTTP_PROXY"] = env["http_proxy"] = proxy
    return env


USAGE = "usage: bridge.py --listen HOST:PORT --socket PATH -- ARGV..."


def _parse(argv: list[str]) -> tuple[str, str, list[str]]:
    """Options before the first `--`, the child's argv (verbatim) after it."""
    if "--" not in argv:
        raise ValueError("no `--` before the command")
    i = argv.index("--")
    opts, command = argv[:i], argv[i + 1:]
    if len(opts) != 4 or opts[0::2] != ["--listen", "--socket"] and opts[0::2] != ["--socket", "--listen"]:
        raise ValueError("expected --listen HOST:PORT and --socket PATH")
    if not command:
        raise ValueError("no command after `--`")
    given = dict(zip(opts[0::2], opts[1::2]))
    return given["--listen"], given["--socket"], command


def main(argv: list[str] | None = None) -> int:
    try:
        listen, socket_path, command = _parse(sys.argv[1:] if argv is None else argv)
    except ValueError as e:
        print(f"bridge: {e}\n{USAGE}", file=sys.stderr)
        return 2

    srv = _listen(listen)  # before the child: its first request finds the port open
    try:
        child = subprocess.Popen(command, env=_child_env(f"http://{listen}"))
    except OSError as e:
        print(f"bridge: cannot start {command[0]}: {e}", file=sys.stderr)
        return 127 if e.errno == errno.ENOENT else 126

    def forward(signum: int, _frame: object) -> None:
        try:
            child.send_signal(signum)
        except OSError:
            pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)

    sel = selectors.DefaultSelector()
    sel.register(srv, selectors.EVENT_READ, None)
    try:
        pidfd = os.pidfd_open(child.pid)
        sel.register(pidfd, selectors.EVENT_READ, "child")
        tick = None
    except (AttributeError, OSError):
        tick = 0.05  # no pidfd: poll the child

    while child.poll() is None:
        for key, mask in sel.select(tick):
            if key.data is None:  # the listener
                try:
                    tcp, _ = srv.accept()
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    continue  # e.g. out of file descriptors: the client sees a reset
                unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    unix.settimeout(5)
                    unix.connect(socket_path)
                except OSError as e:
                    print(f"bridge: connector socket {socket_path}: {e}", file=sys.stderr)
                    unix.close()
                    tcp.close()
                    continue
                _Relay(sel, tcp, unix)
            elif key.data == "child":
                pass  # the loop condition reaps it
            else:
                key.data.on_event(key.fileobj, mask)
    rc = child.returncode
    return 128 - rc if rc < 0 else rc


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
