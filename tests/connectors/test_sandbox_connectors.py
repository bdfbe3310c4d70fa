"""Connectors through a real sandbox: BwrapRunner with a connector socket, the
bridge inside, the proxy on the host, a real HTTP upstream on loopback. The
tools are plain Python using urllib (or curl) with `http://payments/...`
URLs and no proxy code of their own: HTTP_PROXY comes from the environment."""

from __future__ import annotations

import asyncio
import json
import shutil
import textwrap

import pytest

from enforcer.sandbox.runner import BwrapRunner, SandboxResult
from tests.connectors import (
    Recorder,
    gateway,
    new_secret,
    payments_connectors,
    secret_file,
)
from tests.sandbox.conftest import PY, TRY, make_runner


@pytest.fixture
def runner() -> BwrapRunner:
    return make_runner()


def run_tool(runner: BwrapRunner, connectors, code: str, stdin: dict | None = None, *,
             permitted=("payments",), recorder: Recorder | None = None, timeout: float = 60,
             with_connector: bool = True) -> tuple[SandboxResult, Recorder]:
    recorder = recorder if recorder is not None else Recorder()
    if code.startswith(TRY):  # the prelude, then the test's own (indented) code
        code = TRY + textwrap.dedent(code[len(TRY):])
    cmd = PY + [textwrap.dedent(code)]
    data = json.dumps(stdin or {}).encode()

    async def main():
        if not with_connector:
            return await runner.run(cmd, data, timeout, None)
        async with gateway(connectors, recorder).endpoint(permitted=list(permitted), context="sbx") as sock:
            return await runner.run(cmd, data, timeout, None, connector_socket=sock)

    return asyncio.run(main()), recorder


def output(r: SandboxResult) -> dict:
    assert r.exit_code == 0, (r.exit_code, r.signal, r.stderr.decode(errors="replace")[-3000:])
    return json.loads(r.stdout)


TOOL = TRY + """
    import errno, http.client, json, os, socket, stat, sys, urllib.error, urllib.request
    args = json.load(sys.stdin)
    out = {}

    # What the tool itself puts on the wire (instrumentation only: the
    # request goes through urllib's ordinary HTTP_PROXY handling).
    sent = []
    _send = http.client.HTTPConnection.send
    def send(self, data):
        sent.append(data if isinstance(data, bytes) else data.encode())
        return _send(self, data)
    http.client.HTTPConnection.send = send

    out["env"] = {k: os.environ.get(k) for k in ("HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy")}
    req = urllib.request.Request(
        "http://payments/transfers",
        data=json.dumps({"vendor": args["vendor"], "amount": args["amount"]}).encode(), method="POST",
        headers={"Content-Type": "application/json", "Authorization": "Bearer made-up-by-the-tool"})
    with urllib.request.urlopen(req, timeout=20) as r:
        out["status"], out["answer"] = r.status, json.loads(r.read())
    for name, url in (("admin", "http://payments/admin"), ("evil", "http://evil.example/x"),
                      ("traversal", "http://payments/transfers/%2e%2e/admin")):
        try:
            urllib.request.urlopen(url, timeout=20)
            out[name] = "answered"
        except urllib.error.HTTPError as e:
            out[name] = [e.code, json.loads(e.read())["error"]]
    out["sent"] = b"".join(sent).decode("latin-1")

    # Around the connector: the upstream's real address, the outside world,
    # other socket families.
    out["direct"] = attempt(socket.create_connection, ("127.0.0.1", args["upstream_port"]), 3)
    out["external4"] = attempt(socket.create_connection, ("93.184.216.34", 80), 3)
    out["external6"] = attempt(socket.create_connection, ("2606:4700:4700::1111", 80), 3)
    out["netlink"] = attempt(socket.socket, socket.AF_NETLINK, socket.SOCK_RAW, 0)
    out["packet"] = attempt(socket.socket, 17, socket.SOCK_RAW, 0)
    out["raw4"] = attempt(socket.socket, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    out["interfaces"] = sorted(line.split(":")[0].strip() for line in open("/proc/net/dev").readlines()[2:])

    # Every readable file (all of the sandbox's tree but the host's /usr,
    # see the test), and every visible process's environ and cmdline: where
    # does the secret's prefix occur, and what follows it?
    prefix = args["prefix"].encode()
    with open("/tmp/canary", "wb") as f:  # proves the scan finds what is there
        f.write(b"xx" + prefix + b"canary-in-tmp")
    hits, scanned = [], []
    def scan(path):
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            return
        scanned.append(path)
        i = data.find(prefix)
        while i != -1:
            hits.append([path, data[i:i + 120].decode("latin-1")])
            i = data.find(prefix, i + 1)
    for root, dirs, files in os.walk("/"):
        if root == "/":
            dirs[:] = [d for d in dirs if d not in ("proc", "sys", "usr")]
        for name in files:
            path = os.path.join(root, name)
            try:
                if stat.S_ISREG(os.lstat(path).st_mode):
                    scan(path)
            except OSError:
                pass
    pids = [p for p in os.listdir("/proc") if p.isdigit()]
    for p in pids:
        for f in ("environ", "cmdline"):
            scan(f"/proc/{p}/{f}")
    out["pids"] = pids
    out["hits"] = hits
    out["scanned"] = scanned
    out["environ"] = dict(os.environ)
    out["mounts"] = {line.split()[4]: line.split()[5] for line in open("/proc/self/mountinfo")}
    print(json.dumps(out))
"""


def test_a_tool_reaches_its_connector_and_never_the_secret(runner, upstream, tmp_path):
    secret = new_secret()
    key = secret_file(tmp_path, secret)
    conns = payments_connectors(upstream.url, key)
    r, rec = run_tool(runner, conns, TOOL, {"vendor": "V-221", "amount": 100000, "prefix": secret[:8],
                                           "upstream_port": upstream.port})
    out = output(r)

    # The request arrived upstream, with the secret the tool never had.
    (seen,) = upstream.seen
    assert (seen.method, seen.path) == ("POST", "/transfers")
    assert json.loads(seen.body) == {"vendor": "V-221", "amount": 100000}
    assert seen.header("Authorization") == [f"Bearer {secret}"]
    assert out["status"] == 201

    # Nothing the sandbox printed holds it: not its environment, not any file
    # or /proc/*/environ or cmdline it scanned, not its own request, not the
    # answer (the upstream echoed the credential; the proxy redacted it).
    assert secret.encode() not in r.stdout and secret.encode() not in r.stderr
    assert out["env"] == {"HTTP_PROXY": "http://127.0.0.1:3128", "http_proxy": "http://127.0.0.1:3128",
                          "NO_PROXY": None, "no_proxy": None}
    assert all(secret not in v for v in out["environ"].values())
    assert ["/tmp/canary", secret[:8] + "canary-in-tmp"] in out["hits"]
    assert all(secret not in text for _, text in out["hits"])
    assert len(out["pids"]) >= 3  # bubblewrap's init, the bridge, the tool
    for p in out["pids"]:
        assert f"/proc/{p}/environ" in out["scanned"] and f"/proc/{p}/cmdline" in out["scanned"]
    assert "/opt/aecl/bridge.py" in out["scanned"]
    assert "POST http://payments/transfers HTTP/1.1" in out["sent"]
    assert "Authorization: Bearer made-up-by-the-tool" in out["sent"] and secret not in out["sent"]
    echoed = {k.lower(): v for k, v in out["answer"]["headers"]}
    assert echoed["authorization"] == "Bearer [redacted]"
    # The scan skipped only the host's /usr (the distribution, bound
    # read-only: the secret, generated by this test, lives in tmp_path,
    # which no mount exposes). Every other mount is the sandbox's own.
    mounts = {m for m in out["mounts"] if not m.startswith(("/dev", "/proc"))}
    assert mounts == {"/", "/usr", "/tmp", "/run/aecl/connector.sock", "/opt/aecl/bridge.py"}, out["mounts"]
    # The socket is a read-only bind, and connect() through it worked (the
    # requests above went that way); so is the bridge.
    for m in ("/run/aecl/connector.sock", "/opt/aecl/bridge.py", "/usr"):
        assert "ro" in out["mounts"][m].split(","), (m, out["mounts"][m])

    # Refused in the proxy, and recorded.
    assert out["admin"] == [403, "not_allowed"]
    assert out["evil"] == [403, "unknown_connector"]
    assert out["traversal"] == [403, "not_allowed"]
    assert [(e.connector, e.method, e.path, e.status, e.refused) for e, _ in rec.entries] == [
        ("payments", "POST", "/transfers", 201, None),
        ("payments", "GET", "/admin", 403, "not_allowed"),
        ("evil.example", "GET", "/x", 403, "unknown_connector"),
        ("payments", "GET", "/transfers/%2e%2e/admin", 403, "not_allowed"),
    ]
    assert all(ctx == "sbx" for _, ctx in rec.entries)

    # Around the connector: the sandbox's loopback is its own (nothing
    # listens on the upstream's port there), nothing else is routed, and
    # the other families stay denied.
    assert out["direct"] == "ECONNREFUSED"
    assert out["external4"] == "ENETUNREACH"
    assert out["external6"] in ("ENETUNREACH", "EADDRNOTAVAIL", "EAFNOSUPPORT")
    assert (out["netlink"], out["packet"]) == ("EPERM", "EPERM")
    assert out["raw4"] in ("EPERM", "EACCES")
    assert out["interfaces"] == ["lo"]


def test_without_a_connector_socket_nothing_changes(runner, upstream, tmp_path):
    r, rec = run_tool(runner, None, TRY + """
        import json, os, socket
        print(json.dumps({
            "inet": attempt(socket.socket, socket.AF_INET, socket.SOCK_STREAM),
            "inet6": attempt(socket.socket, socket.AF_INET6, socket.SOCK_STREAM),
            "unix": attempt(socket.socket, socket.AF_UNIX, socket.SOCK_STREAM),
            "bridge": os.path.exists("/opt/aecl/bridge.py"),
            "run_aecl": os.path.exists("/run/aecl"),
            "proxy_env": sorted(k for k in os.environ if "proxy" in k.lower()),
            "ppid": os.getppid(),
        }))
    """, with_connector=False)
    assert output(r) == {"inet": "EPERM", "inet6": "EPERM", "unix": "ok", "bridge": False,
                         "run_aecl": False, "proxy_env": [], "ppid": 1}
    assert rec.entries == []


def test_the_tool_may_use_the_unix_socket_directly_and_curl_works_unmodified(runner, upstream, tmp_path):
    conns = payments_connectors(upstream.url, secret_file(tmp_path, new_secret()))
    code = TRY + """
        import json, socket, subprocess
        s = socket.socket(socket.AF_UNIX)
        s.connect("/run/aecl/connector.sock")
        s.sendall(b"GET /accounts/A-1 HTTP/1.1\\r\\nHost: payments\\r\\n\\r\\n")
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
        out = {"unix": raw.split(b"\\r\\n", 1)[0].decode()}
        if %r:
            curl = subprocess.run(["/usr/bin/curl", "-sS", "-o", "/dev/null", "-w", "%%{http_code}",
                                   "http://payments/accounts/A-2"], capture_output=True, text=True)
            out["curl"] = [curl.returncode, curl.stdout, curl.stderr]
        print(json.dumps(out))
    """ % (shutil.which("curl") == "/usr/bin/curl")
    r, rec = run_tool(runner, conns, code)
    out = output(r)
    assert out["unix"] == "HTTP/1.1 200 OK"
    paths = ["/accounts/A-1"]
    if "curl" in out:
        assert out["curl"] == [0, "200", ""]
        paths.append("/accounts/A-2")
    assert [s.path for s in upstream.seen] == paths
    assert [(e.path, e.status) for e, _ in rec.entries] == [(p, 200) for p in paths]


def test_bodies_and_concurrent_requests_pass_the_bridge_intact(runner, upstream, tmp_path):
    conns = payments_connectors(upstream.url, secret_file(tmp_path, new_secret()), max_body_bytes=1 << 20)
    r, rec = run_tool(runner, conns, """
        import json, threading, urllib.request
        results = {}
        def one(i):
            body = json.dumps({"i": i, "pad": str(i) * 300_000}).encode()
            req = urllib.request.Request(f"http://payments/transfers/{i}", data=body, method="POST")
            with urllib.request.urlopen(req, timeout=30) as r:
                echoed = json.loads(r.read())
            results[i] = [r.status, echoed["body"] == body.decode(), echoed["path"]]
        threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
        for t in threads: t.start()
        for t in threads: t.join()
        print(json.dumps(results))
    """)
    out = output(r)
    assert out == {str(i): [201, True, f"/transfers/{i}"] for i in range(6)}
    assert sorted(e.bytes_in for e, _ in rec.entries) == sorted(len(s.body) for s in upstream.seen)
    assert len(rec.entries) == 6 and all(e.bytes_in > 300_000 for e, _ in rec.entries)


def test_an_oversize_body_from_inside_gets_413(runner, upstream, tmp_path):
    conns = payments_connectors(upstream.url, secret_file(tmp_path, new_secret()))  # max_body_bytes 4096
    r, rec = run_tool(runner, conns, """
        import json, urllib.error, urllib.request
        req = urllib.request.Request("http://payments/transfers", data=b"x" * 200_000, method="POST")
        try:
            urllib.request.urlopen(req, timeout=30)
            out = "answered"
        except urllib.error.HTTPError as e:
            out = [e.code, json.loads(e.read())["error"]]
        except OSError as e:
            out = ["failed", repr(e)]
        print(json.dumps(out))
    """)
    assert output(r) == [413, "body_too_large"]
    assert upstream.seen == []
    assert [(e.refused, e.bytes_in) for e, _ in rec.entries] == [("body_too_large", 0)]


def test_the_bridge_passes_stdin_and_the_tools_exit_status_on(runner, upstream, tmp_path):
    conns = payments_connectors(upstream.url, secret_file(tmp_path, new_secret()))
    r, _ = run_tool(runner, conns, """
        import json, sys
        print(json.load(sys.stdin)["word"]); sys.stdout.flush()
        sys.stderr.write("to stderr\\n")
        sys.exit(7)
    """, {"word": "hello"})
    assert (r.exit_code, r.stdout, r.stderr) == (7, b"hello\n", b"to stderr\n")
    r, _ = run_tool(runner, conns, "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    assert r.exit_code == 128 + 9


def test_a_sandbox_that_runs_past_its_timeout_is_killed_with_the_bridge(runner, upstream, tmp_path):
    conns = payments_connectors(upstream.url, secret_file(tmp_path, new_secret()))
    r, _ = run_tool(runner, conns, "import time; time.sleep(60)", timeout=1.5)
    assert r.timed_out and "timeout" in r.limits_hit


def test_a_connector_socket_that_is_not_a_socket_is_refused_before_anything_starts(runner, tmp_path):
    from enforcer.errors import SandboxError

    not_a_socket = tmp_path / "connector.sock"
    not_a_socket.write_text("")
    for path in (not_a_socket, tmp_path / "missing.sock"):
        with pytest.raises(SandboxError, match="connector socket"):
            asyncio.run(runner.run(["/bin/true"], b"", 10, None, connector_socket=path))
    assert runner.running == 0


def test_bwrap_argv_with_and_without_a_connector_socket():
    from enforcer.sandbox.bwrap import BRIDGE_SOURCE, bwrap_argv
    from tests.sandbox.conftest import PROFILE

    plain = bwrap_argv("/usr/bin/bwrap", PROFILE, ["/bin/tool", "--x"], None)
    assert plain[plain.index("--") + 1:] == ["/bin/tool", "--x"]
    assert "/run/aecl/connector.sock" not in plain and "/opt/aecl/bridge.py" not in plain
    argv = bwrap_argv("/usr/bin/bwrap", PROFILE, ["/bin/tool", "--x"], None,
                      connector_socket="/tmp/aecl-conn-x/connector.sock")
    i = argv.index("--")
    assert argv[i + 1:] == ["/usr/bin/python3", "-I", "/opt/aecl/bridge.py", "--listen", "127.0.0.1:3128",
                            "--socket", "/run/aecl/connector.sock", "--", "/bin/tool", "--x"]
    opts = argv[:i]
    j = opts.index("/tmp/aecl-conn-x/connector.sock")
    assert opts[j - 1:j + 2] == ["--ro-bind", "/tmp/aecl-conn-x/connector.sock", "/run/aecl/connector.sock"]
    j = opts.index(str(BRIDGE_SOURCE))
    assert opts[j - 1:j + 2] == ["--ro-bind", str(BRIDGE_SOURCE), "/opt/aecl/bridge.py"]
    assert "--unshare-all" in opts  # still no network but the sandbox's own loopback
