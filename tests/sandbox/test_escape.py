"""The escape suite: a tool trying to get out of its sandbox, for real under
bubblewrap with the default profile. Every case asserts the outcome."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import stat
import threading
import uuid
from pathlib import Path

import pytest

from tests.conftest import write_config
from tests.sandbox.conftest import PY, TRY, host_pids_with, make_runner, probe, run_py

# -- network --------------------------------------------------------------


def test_tcp_to_a_host_loopback_listener_fails(runner):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(1.0)
    port = srv.getsockname()[1]
    accepted = []

    def accept():
        try:
            accepted.append(srv.accept())
        except OSError:
            pass

    t = threading.Thread(target=accept)
    t.start()
    out = probe(runner, TRY + f"""
        import socket, json
        print(json.dumps({{
            "tcp4": attempt(socket.create_connection, ("127.0.0.1", {port}), 2),
            "tcp6": attempt(socket.create_connection, ("::1", {port}), 2),
        }}))
    """)
    t.join()
    srv.close()
    assert not accepted
    assert out == {"tcp4": "EPERM", "tcp6": "EPERM"}


def test_dns_fails(runner):
    out = probe(runner, """
        import socket, json, os
        try:
            socket.getaddrinfo("deb.debian.org", 443); dns = "resolved"
        except socket.gaierror as e:
            dns = "gaierror"
        print(json.dumps({"dns": dns, "resolv_conf": os.path.exists("/etc/resolv.conf")}))
    """)
    assert out == {"dns": "gaierror", "resolv_conf": False}


def test_raw_icmp_netlink_vsock_sockets_and_io_uring_fail_with_eperm(runner):
    out = probe(runner, TRY + """
        import socket, json, ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        def io_uring_setup():
            params = ctypes.create_string_buffer(120)
            r = libc.syscall(425, 4, params)
            if r < 0:
                raise OSError(ctypes.get_errno(), "io_uring_setup")
        print(json.dumps({
            "raw_icmp": attempt(socket.socket, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
            "ping_icmp": attempt(socket.socket, socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP),
            "raw6": attempt(socket.socket, socket.AF_INET6, socket.SOCK_RAW, 58),
            "packet": attempt(socket.socket, 17, socket.SOCK_RAW, 0),
            "netlink": attempt(socket.socket, socket.AF_NETLINK, socket.SOCK_RAW, 0),
            "vsock": attempt(socket.socket, 40, socket.SOCK_STREAM, 0),
            "udp": attempt(socket.socket, socket.AF_INET, socket.SOCK_DGRAM),
            "io_uring_setup": attempt(io_uring_setup),
            "unix": attempt(socket.socket, socket.AF_UNIX, socket.SOCK_STREAM),
        }))
    """)
    assert out.pop("unix") == "ok"  # local IPC within the sandbox stays possible
    assert out == {k: "EPERM" for k in out}, out


def test_host_unix_sockets_under_tmp_and_run_and_abstract_are_unreachable(runner):
    name = "aecl-test-" + uuid.uuid4().hex[:12]
    paths = [f"/tmp/{name}.sock", f"/run/{name}.sock"]
    servers = []
    for p in paths + ["\0" + name]:
        s = socket.socket(socket.AF_UNIX)
        s.bind(p)
        s.listen(1)
        s.setblocking(False)
        servers.append(s)
    try:
        out = probe(runner, TRY + f"""
            import socket, json
            def connect(path):
                s = socket.socket(socket.AF_UNIX)
                s.settimeout(2)
                s.connect(path)
            print(json.dumps({{p: attempt(connect, p) for p in {paths!r} + ["\\0{name}"]}}))
        """)
        for s in servers:
            with pytest.raises(BlockingIOError):
                s.accept()  # nobody got through
    finally:
        for s in servers:
            s.close()
        for p in paths:
            Path(p).unlink(missing_ok=True)
    assert out == {paths[0]: "ENOENT", paths[1]: "ENOENT", "\0" + name: "ECONNREFUSED"}


# -- files --------------------------------------------------------------------


def test_writes_outside_the_tmpfs_fail(runner):
    out = probe(runner, TRY + """
        import json
        def write(p):
            with open(p, "w") as f:
                f.write("x")
        targets = ["/aecl-probe", "/usr/aecl-probe", "/opt/aecl-probe", "/dev/aecl-probe",
                   "/proc/aecl-probe", "/proc/sys/kernel/hostname", "/etc/aecl-probe", "/tmp/ok", "/dev/shm/ok"]
        print(json.dumps({p: attempt(write, p) for p in targets}))
    """)
    assert out.pop("/tmp/ok") == "ok" and out.pop("/dev/shm/ok") == "ok"
    assert out.pop("/proc/sys/kernel/hostname") == "EROFS"
    assert all(v in ("EROFS", "ENOENT") for v in out.values()), out
    assert not Path("/usr/aecl-probe").exists() and not Path("/aecl-probe").exists()


def test_global_sysctls_are_read_only(runner):
    # When the service runs as root, the sandbox's processes are host uid 0
    # (without capabilities), and /proc/sys checks only the uid: /proc must
    # be read-only or kernel.core_pattern would be a way out. Checked with
    # access(2) only: a failing test must not change the host.
    out = probe(runner, """
        import os, json
        paths = ["/proc/sys/kernel/core_pattern", "/proc/sys/kernel/modprobe", "/proc/sys/vm/drop_caches",
                 "/proc/sysrq-trigger", "/proc/sys/fs/binfmt_misc"]
        print(json.dumps({p: os.access(p, os.W_OK) for p in paths}))
    """)
    assert not any(out.values()), out


def test_symlink_and_hardlink_tricks_do_not_reach_host_files(runner, tmp_path):
    marker = "host-secret-" + uuid.uuid4().hex
    secret = Path("/root") / f".aecl-test-{uuid.uuid4().hex[:8]}"
    secret.write_text(marker)
    host_tmp = tmp_path / "secret.txt"
    host_tmp.write_text(marker)
    try:
        r = run_py(runner, TRY + f"""
            import os, json
            res = {{}}
            for i, target in enumerate(["{secret}", "{host_tmp}", "/proc/1/root{secret}",
                                        "/proc/self/root{host_tmp}", "/etc/shadow", "/proc/1/cwd/../../root"]):
                link = f"/tmp/l{{i}}"
                os.symlink(target, link)
                try:
                    res[target] = open(link).read()[:100]
                except OSError as e:
                    res[target] = _errno.errorcode[e.errno]
            res["hardlink_usr"] = attempt(os.link, "/usr/bin/python3", "/tmp/h")
            res["hardlink_root"] = attempt(os.link, "{secret}", "/tmp/h2")
            res["proc1_root"] = sorted(os.listdir("/proc/1/root"))
            print(json.dumps(res))
        """)
        assert r.exit_code == 0, r.stderr
        assert marker.encode() not in r.stdout
        out = json.loads(r.stdout)
        assert out["hardlink_usr"] == "EXDEV" and out["hardlink_root"] == "ENOENT"
        assert "root" not in out["proc1_root"] and "etc" not in out["proc1_root"]
        assert all(v in ("ENOENT", "EISDIR") for k, v in out.items() if k.startswith("/")), out
    finally:
        secret.unlink()


def test_service_key_config_audit_log_and_home_are_not_visible(runner, tmp_path):
    config = write_config(tmp_path / "svc")
    cfg = json.loads(json.dumps(__import__("yaml").safe_load(config.read_text())))
    Path(cfg["audit"]["path"]).write_text('{"audit": "entry"}\n')
    paths = [str(config), cfg["audit"]["signing_key"], cfg["audit"]["path"], cfg["state"]["sqlite_path"],
             str(Path(cfg["audit"]["signing_key"]).parent), os.path.expanduser("~"), "/root",
             str(Path.cwd()), "/home", "/etc/aecl", "/var/lib", "/run", "/etc/passwd", "/etc/shadow"]
    out = probe(runner, TRY + f"""
        import os, json
        print(json.dumps({{p: attempt(os.stat, p) for p in {paths!r}}}))
    """)
    assert out == {p: "ENOENT" for p in paths}, out


def test_proc_shows_only_the_sandbox_processes(runner):
    out = probe(runner, """
        import os, json
        procs = {}
        for p in os.listdir("/proc"):
            if p.isdigit():
                procs[p] = open(f"/proc/{p}/cmdline", "rb").read().split(b"\\0")[0].decode()
        print(json.dumps({"procs": procs, "self": os.getpid(), "ppid": os.getppid()}))
    """)
    assert set(out["procs"]) == {"1", str(out["self"])}, out
    assert out["procs"]["1"].endswith("bwrap") and out["ppid"] == 1


def test_proc_environ_and_cmdline_hold_none_of_the_service_secrets(runner, monkeypatch):
    env_secret = "svc-env-" + uuid.uuid4().hex
    arg_secret = "call-arg-" + uuid.uuid4().hex
    monkeypatch.setenv("AECL_SERVICE_SECRET", env_secret)
    r = run_py(runner, """
        import os, json, sys
        sys.stdin.read()
        dump = {}
        for p in os.listdir("/proc"):
            if p.isdigit():
                for f in ("environ", "cmdline"):
                    try:
                        dump[p + "/" + f] = open(f"/proc/{p}/{f}", "rb").read().decode(errors="replace")
                    except OSError as e:
                        dump[p + "/" + f] = "unreadable: " + e.strerror
        dump["self_environ_keys"] = sorted(os.environ)
        print(json.dumps(dump))
    """, stdin=json.dumps({"password": arg_secret}).encode())
    assert r.exit_code == 0, r.stderr
    assert env_secret.encode() not in r.stdout and arg_secret.encode() not in r.stdout
    dump = json.loads(r.stdout)
    assert "1/environ" in dump and "1/cmdline" in dump
    assert set(dump["self_environ_keys"]) <= {"PATH", "LANG", "HOME", "PWD", "LC_CTYPE"}


def test_only_fds_0_to_2_are_open(runner):
    out = probe(runner, """
        import os, json, resource
        open_fds = []
        for fd in range(resource.getrlimit(resource.RLIMIT_NOFILE)[0]):
            try:
                os.fstat(fd); open_fds.append(fd)
            except OSError:
                pass
        print(json.dumps({"fds": open_fds}))
    """)
    assert out["fds"] == [0, 1, 2]


# -- processes -------------------------------------------------------------------


def test_kill_and_ptrace_of_the_service_or_a_sibling_sandbox_fail(tmp_path):
    runner = make_runner()
    marker = "aecl-sibling-" + uuid.uuid4().hex

    async def scenario():
        sibling = asyncio.ensure_future(runner.run(
            ["/usr/bin/python3", "-I", "-c", "import time; time.sleep(30)", marker], b"", 30, None))
        for _ in range(100):
            sib_pids = host_pids_with(marker)
            if sib_pids:
                break
            await asyncio.sleep(0.05)
        assert sib_pids, "sibling sandbox did not start"
        targets = [os.getpid(), os.getppid(), *sib_pids]
        attacker = await runner.run(PY + [TRY + f"""
import os, json, ctypes, signal
libc = ctypes.CDLL(None, use_errno=True)
def ptrace_attach(pid):
    if libc.ptrace(16, pid, 0, 0) < 0:
        raise OSError(ctypes.get_errno(), "ptrace")
def vm_read(pid):
    buf = ctypes.create_string_buffer(8)
    iov = (ctypes.c_void_p * 2)(ctypes.addressof(buf), 8)
    remote = (ctypes.c_void_p * 2)(0x400000, 8)
    if libc.process_vm_readv(pid, iov, 1, remote, 1, 0) < 0:
        raise OSError(ctypes.get_errno(), "process_vm_readv")
res = {{}}
for pid in {targets!r}:
    res[str(pid)] = {{"kill": attempt(os.kill, pid, signal.SIGKILL), "ptrace": attempt(ptrace_attach, pid),
                     "vm_read": attempt(vm_read, pid)}}
res["ptrace_init"] = attempt(ptrace_attach, 1)
res["kill_all"] = attempt(os.kill, -1, signal.SIGKILL)
print(json.dumps(res))
"""], b"", 30, None)
        await asyncio.sleep(0.3)
        alive = host_pids_with(marker)
        sibling.cancel()
        try:
            await sibling
        except asyncio.CancelledError:
            pass
        return attacker, alive, targets

    attacker, alive, targets = asyncio.run(scenario())
    assert attacker.exit_code == 0, attacker.stderr
    out = json.loads(attacker.stdout)
    for pid in targets:
        # Not even visible: the host's pids do not exist in the sandbox's pid namespace.
        assert out[str(pid)]["kill"] == "ESRCH", out
        assert out[str(pid)]["ptrace"] == "EPERM" and out[str(pid)]["vm_read"] == "EPERM", out
    assert out["ptrace_init"] == "EPERM"
    assert out["kill_all"] in ("ok", "ESRCH")  # kill(-1) reaches only its own sandbox...
    assert alive, "...and the sibling sandbox survived it"


def test_a_setuid_binary_gives_no_privilege(tmp_path):
    # A setuid copy of python owned by a host uid that is not the sandbox's:
    # if exec honoured the bit, the effective uid inside would change.
    tools = Path("/opt") / f"aecl-test-{uuid.uuid4().hex[:8]}"
    tools.mkdir()
    try:
        suid = tools / "python3-suid"
        shutil.copy2("/usr/bin/python3.11", suid)
        os.chown(suid, 4321, 4321)
        os.chmod(suid, 0o4755 | stat.S_ISGID)
        runner = make_runner(uid=1000, gid=1000)
        out = probe(runner, TRY + """
            import json, subprocess
            child = subprocess.run(["/opt/aecl/tools/python3-suid", "-I", "-c",
                "import os; print(os.getuid(), os.geteuid(), os.getegid(), "
                "open('/proc/self/status').read().split('CapEff:')[1].split()[0])"],
                capture_output=True, text=True)
            su = subprocess.run(["/usr/bin/su", "-c", "id -u"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
            status = open("/proc/self/status").read()
            mounts = {l.split()[1]: l.split()[3] for l in open("/proc/self/mounts")}
            print(json.dumps({"child": child.stdout.split(), "su_rc": su.returncode, "su_out": su.stdout,
                              "nnp": status.split("NoNewPrivs:")[1].split()[0],
                              "usr_opts": mounts["/usr"], "tools_opts": mounts["/opt/aecl/tools"]}))
        """, tools_dir=tools)
    finally:
        shutil.rmtree(tools)
    assert out["child"] == ["1000", "1000", "1000", "0000000000000000"], out
    assert out["su_rc"] != 0 and out["su_out"].strip() != "0"
    assert out["nnp"] == "1"
    assert "nosuid" in out["usr_opts"].split(",") and "nosuid" in out["tools_opts"].split(",")


def test_unshare_and_namespace_calls_fail(runner):
    out = probe(runner, TRY + """
        import json, subprocess, ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        def call(name, *args):
            def f():
                if getattr(libc, name)(*args) < 0:
                    raise OSError(ctypes.get_errno(), name)
            return f
        r = subprocess.run(["/usr/bin/unshare", "-r", "/bin/true"], capture_output=True, text=True)
        print(json.dumps({
            "unshare_r_rc": r.returncode, "unshare_r_err": r.stderr,
            "unshare_user": attempt(call("unshare", 0x10000000)),
            "unshare_net": attempt(call("unshare", 0x40000000)),
            "unshare_ns": attempt(call("unshare", 0x00020000)),
            "setns": attempt(call("setns", os.open("/proc/self/ns/net", os.O_RDONLY), 0)),
            "mount": attempt(call("mount", b"none", b"/tmp", b"tmpfs", 0, None)),
            "umount": attempt(call("umount2", b"/tmp", 2)),
            "chroot": attempt(call("chroot", b"/tmp")),
            "keyctl": attempt(call("syscall", 250, 0, 0, 0, 0, 0)),
            "add_key": attempt(call("syscall", 248, b"user", b"k", b"v", 1, -2)),
            "bpf": attempt(call("syscall", 321, 0, None, 0)),
            "perf_event_open": attempt(call("syscall", 298, None, 0, -1, -1, 0)),
            "userfaultfd": attempt(call("syscall", 323, 0)),
        }))
    """)
    assert out.pop("unshare_r_rc") != 0 and "Operation not permitted" in out.pop("unshare_r_err")
    assert out == {k: "EPERM" for k in out}, out


def test_tiocsti_injection_fails_only_because_of_the_filter():
    code = TRY + """
        import os, json, fcntl, termios, ctypes
        os.setsid()                          # a session of its own...
        master, slave = os.openpty()
        fd = os.open(os.ttyname(slave), os.O_RDWR)   # ...with the pty as controlling terminal
        libc = ctypes.CDLL(None, use_errno=True)
        def ioctl(req):
            def f():
                c = ctypes.c_char(b"x")
                if libc.ioctl(fd, ctypes.c_ulong(req), ctypes.byref(c)) < 0:
                    raise OSError(ctypes.get_errno(), "ioctl")
            return f
        print(json.dumps({"tiocsti": attempt(ioctl(termios.TIOCSTI)),
                          "tiocsti_high_bits": attempt(ioctl(0x100000000 | termios.TIOCSTI)),
                          "tioclinux": attempt(ioctl(0x541C))}))
    """
    hardened = probe(make_runner(), code)
    assert hardened == {"tiocsti": "EPERM", "tiocsti_high_bits": "EPERM", "tioclinux": "EPERM"}
    # The same tool without the seccomp filter injects into its own terminal:
    # the filter is what stops it.
    if Path("/proc/sys/dev/tty/legacy_tiocsti").exists() and \
            Path("/proc/sys/dev/tty/legacy_tiocsti").read_text().strip() == "0":
        pytest.skip("this kernel disables TIOCSTI outright (dev.tty.legacy_tiocsti=0)")
    assert probe(make_runner(seccomp=False), code)["tiocsti"] == "ok"


def test_other_abis_are_refused_with_eperm(runner):
    out = probe(runner, """
        import ctypes, mmap, json, platform
        libc = ctypes.CDLL(None, use_errno=True)
        # i386 getpid through int 0x80: mov eax, 20; int 0x80; ret
        code = b"\\xb8\\x14\\x00\\x00\\x00\\xcd\\x80\\xc3"
        m = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        m.write(code)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
        int80 = ctypes.CFUNCTYPE(ctypes.c_int)(addr)()
        # x32 getpid: the x86_64 number with the x32 bit set
        x32 = libc.syscall(0x40000000 | 39)
        print(json.dumps({"machine": platform.machine(), "int80": int80, "x32": x32,
                          "x32_errno": ctypes.get_errno(),
                          "seccomp": open("/proc/self/status").read().split("Seccomp:")[1].split()[0]}))
    """)
    if out["machine"] != "x86_64":
        pytest.skip("the i386/x32 checks are x86_64-specific")
    assert out["seccomp"] == "2"  # filter mode
    assert out["int80"] == -1     # -EPERM, not a pid: the 32-bit entry is refused
    assert out["x32"] == -1 and out["x32_errno"] == 1
