"""Start the whole example world: payments, records, config, webhooks, mail.

    python examples/world/serve.py --dir var/world [--ports-file FILE] [--base-port N]

Each service runs as a child process on 127.0.0.1 with its database in DIR
(DIR/<name>.db). The payments API key is DIR/payments.key (created if missing:
256 random bits as hex, mode 0600); it is passed as a file path, never on a
command line or in an environment. Once every service is ready, FILE (default
DIR/world.json) is written atomically:

    {"payments": "http://127.0.0.1:P", "records": ..., "config": ..., "webhooks": ...,
     "mail": ..., "payments_key_file": "DIR/payments.key"}

and `ready FILE` is printed on stdout. SIGTERM or SIGINT stops every service
and exits 0; if a service dies, the others are stopped and the exit status is 1.
FILE is removed on exit. Without --base-port each service picks a free port;
with it they take N, N+1, ... in the order above.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SERVICES = [("payments", "payments.py"), ("records", "records.py"), ("config", "config_service.py"),
            ("webhooks", "webhooks.py"), ("mail", "mail.py")]
READY_TIMEOUT = 30.0  # seconds for every service to report ready
STOP_TIMEOUT = 10.0  # seconds for the services to stop before they are killed


def say(message: str) -> None:
    print(f"serve: {message}", file=sys.stderr, flush=True)


def ensure_key(path: Path) -> Path:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if not path.read_text(encoding="utf-8").strip():
            raise SystemExit(f"serve: the API key file {path} is empty; delete it to get a new key")
        if path.stat().st_mode & 0o077:
            say(f"warning: {path} is readable by others; chmod 600 it")
        return path
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(secrets.token_hex(32) + "\n")
    return path


def write_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _parent_death_signal():
    """A preexec_fn giving the child SIGTERM if serve itself dies (Linux), or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here, before the fork
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def start_children(directory: Path, key_file: Path, base_port: int | None) -> dict[str, subprocess.Popen]:
    children = {}
    preexec = _parent_death_signal()
    for i, (name, script) in enumerate(SERVICES):
        port = base_port + i if base_port else 0
        cmd = [sys.executable, str(HERE / script), "--port", str(port), "--db", str(directory / f"{name}.db")]
        if name == "payments":
            cmd += ["--api-key-file", str(key_file)]
        # own process group: a terminal's Ctrl-C reaches serve, which stops them in order
        children[name] = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True,
                                          process_group=0, preexec_fn=preexec)  # noqa: PLW1509 - no threads yet
    return children


def wait_ready(children: dict[str, subprocess.Popen], stop: threading.Event) -> dict[str, int] | None:
    """Each child's port from its `ready <port>` line; None if stopped by a signal."""
    lines: queue.Queue = queue.Queue()

    def read(name, proc):
        lines.put((name, proc.stdout.readline()))
        for _ in proc.stdout:  # keep the pipe drained
            pass

    for name, proc in children.items():
        threading.Thread(target=read, args=(name, proc), daemon=True).start()
    ports: dict[str, int] = {}
    deadline = time.monotonic() + READY_TIMEOUT
    while len(ports) < len(children):
        if stop.is_set():
            return None
        if time.monotonic() > deadline:
            raise RuntimeError(f"not ready after {READY_TIMEOUT:.0f}s: {', '.join(sorted(set(children) - set(ports)))}")
        try:
            name, line = lines.get(timeout=0.2)
        except queue.Empty:
            continue
        word, _, port = line.strip().partition(" ")
        if word != "ready" or not port.isdigit():
            code = children[name].wait()
            raise RuntimeError(f"{name} did not start (exit status {code}); see its messages above")
        ports[name] = int(port)
    return ports


def stop_children(children: dict[str, subprocess.Popen]) -> None:
    for proc in children.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for name, proc in children.items():
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            say(f"{name} did not stop; killing it")
            proc.kill()
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="serve.py", description="Start the example world's five services.")
    parser.add_argument("--dir", required=True, help="directory for the databases, the payments key and world.json")
    parser.add_argument("--ports-file", help="where to write the services' URLs (default DIR/world.json)")
    parser.add_argument("--base-port", type=int, help="fixed ports N..N+4 instead of free ones")
    args = parser.parse_args(argv)
    if args.base_port is not None and not 1 <= args.base_port <= 65531:
        parser.error("--base-port must be 1..65531")
    directory = Path(args.dir).resolve()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    ports_file = Path(args.ports_file).resolve() if args.ports_file else directory / "world.json"
    key_file = ensure_key(directory / "payments.key")

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())

    children: dict[str, subprocess.Popen] = {}
    wrote = False
    try:
        children = start_children(directory, key_file, args.base_port)
        ports = wait_ready(children, stop)
        if ports is None:
            return 0
        world = {name: f"http://127.0.0.1:{ports[name]}" for name, _ in SERVICES}
        world["payments_key_file"] = str(key_file)
        write_atomic(ports_file, world)
        wrote = True
        say("the world is up: " + ", ".join(f"{name} {url}" for name, url in world.items() if name in ports))
        print(f"ready {ports_file}", flush=True)
        while not stop.wait(0.2):
            for name, proc in children.items():
                if proc.poll() is not None:
                    say(f"{name} exited with status {proc.returncode}; stopping the others")
                    return 1
        return 0
    except (OSError, RuntimeError) as e:
        say(str(e))
        return 1
    finally:
        stop_children(children)
        if wrote:
            ports_file.unlink(missing_ok=True)
        if stop.is_set():
            say("stopped")


if __name__ == "__main__":
    sys.exit(main())
