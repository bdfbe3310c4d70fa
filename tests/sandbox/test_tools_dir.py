"""check_tools_dir: the registry's tools_dir is bound read-only into every
sandbox, so it obeys the profile's bind rules and holds none of the
service's secrets (symlinks resolved on both sides)."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest

from enforcer.sandbox.profile import check_tools_dir


@pytest.fixture
def opt():
    """A scratch directory under /opt (binds under /tmp are refused)."""
    d = Path("/opt") / f"aecl-test-tools-{uuid.uuid4().hex[:12]}"
    d.mkdir()
    yield d
    shutil.rmtree(d)


def test_a_plain_tools_dir_with_the_secrets_elsewhere_is_accepted(opt):
    (opt / "tools").mkdir()
    (opt / "tools2").mkdir()
    secrets = [opt / "state" / "audit.key", opt / "tools2" / "state.db", Path("/var/lib/aecl/audit.log")]
    assert check_tools_dir(opt / "tools", secrets) is None
    check_tools_dir(opt / "tools", [])
    check_tools_dir(opt / "not-yet-there", secrets)


@pytest.mark.parametrize("bad", ["/", "/etc", "/tmp", "/home", "/home/alice", "/root", "/var/lib/aecl/tools",
                                 "/etc/aecl/tools", "/run/tools", "/proc/self", "/opt/aecl/tools",
                                 "relative/tools", "/usr/../etc"])
def test_a_tools_dir_in_host_state_is_refused(bad):
    with pytest.raises(ValueError, match=r"^tools_dir: bind"):
        check_tools_dir(Path(bad), [])


def test_a_checkout_under_tmp_or_a_home_directory_is_judged_by_its_contents(tmp_path):
    """A fresh clone may live under /tmp or in $HOME: its tools folder is
    fine as long as it holds no secret, socket, FIFO or device."""
    tools = tmp_path / "checkout" / "examples" / "tools"
    tools.mkdir(parents=True)
    (tools / "read_invoice.py").write_text("print('{}')\n")
    check_tools_dir(tools, [tmp_path / "checkout" / "var" / "keys" / "audit.key"])
    check_tools_dir(Path("/home/alice/aecl/examples/tools"), [])  # not there: nothing bound


def test_a_socket_or_fifo_inside_the_tools_dir_is_refused(opt):
    import os
    import socket

    tools = opt / "tools"
    tools.mkdir()
    os.mkfifo(tools / "pipe")
    with pytest.raises(ValueError, match="socket, FIFO or device"):
        check_tools_dir(tools, [])
    (tools / "pipe").unlink()
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(tools / "agent.sock"))
        with pytest.raises(ValueError, match="socket, FIFO or device"):
            check_tools_dir(tools, [])


def test_a_tools_dir_others_can_write_is_refused(opt):
    tools = opt / "tools"
    (tools / "sub").mkdir(parents=True)
    (tools / "sub").chmod(0o777)
    with pytest.raises(ValueError, match="writable by group or others"):
        check_tools_dir(tools, [])


def test_a_tools_dir_linking_into_host_state_is_refused(opt):
    link = opt / "tools"
    link.symlink_to("/etc/ssh")
    with pytest.raises(ValueError, match="etc/ssh"):
        check_tools_dir(link, [])


@pytest.mark.parametrize("where", ["inside", "deep", "is_the_dir"])
def test_a_secret_inside_the_tools_dir_is_refused(opt, where):
    tools = opt / "tools"
    (tools / "sub").mkdir(parents=True)
    secret = {"inside": tools / "audit.key", "deep": tools / "sub" / "state.db", "is_the_dir": tools}[where]
    with pytest.raises(ValueError, match="would expose") as e:
        check_tools_dir(tools, [opt / "elsewhere.key", secret])
    assert str(secret) in str(e.value)


def test_secrets_are_compared_after_resolving_symlinks(opt):
    real = opt / "real"
    real.mkdir()
    (real / "audit.key").write_text("k")
    # tools_dir is a symlink to the directory holding the key.
    (opt / "tools").symlink_to(real)
    with pytest.raises(ValueError, match="audit.key"):
        check_tools_dir(opt / "tools", [real / "audit.key"])
    # The key is named through a symlink that leads inside tools_dir.
    (opt / "key-link").symlink_to(real / "audit.key")
    with pytest.raises(ValueError, match=r"key-link' \(-> '.*/real/audit.key'\)"):
        check_tools_dir(real, [opt / "key-link"])
    # A sibling sharing the prefix is not inside.
    (opt / "real2").mkdir()
    check_tools_dir(opt / "real2", [real / "audit.key"])
