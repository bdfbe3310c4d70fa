"""Where the opa binary comes from: named (config, --opa, $OPA_BIN), PATH, or
the development build of a source checkout; never a silent substitute."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from enforcer.errors import ConfigError
from enforcer.policy import opa


def _exe(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def bare(monkeypatch, tmp_path):
    """No $OPA_BIN, no opa on PATH, no $AECL_OPA_CACHE, the package installed outside a checkout."""
    monkeypatch.delenv("OPA_BIN", raising=False)
    monkeypatch.delenv("AECL_OPA_CACHE", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-path"))
    site = tmp_path / "site-packages"
    monkeypatch.setattr(opa, "__file__", str(site / "enforcer" / "policy" / "opa.py"))
    return tmp_path


def test_installed_package_without_opa_fails_clearly(bare):
    assert opa.development_opa() is None
    with pytest.raises(ConfigError) as e:
        opa.find_opa_binary()
    assert "no opa binary (looked at policy.opa.binary, $OPA_BIN, PATH)" in str(e.value)
    assert "$OPA_BIN" in str(e.value) and "scripts/build-opa.sh" in str(e.value)


def test_named_binaries_win_and_must_exist(bare, monkeypatch):
    configured = _exe(bare / "a" / "opa")
    env = _exe(bare / "b" / "opa")
    monkeypatch.setenv("OPA_BIN", str(env))
    assert opa.find_opa_binary(str(configured)) == str(configured)
    assert opa.find_opa_binary() == str(env)
    with pytest.raises(ConfigError, match="the configured opa binary is .*not an executable file"):
        opa.find_opa_binary(str(bare / "missing"))
    monkeypatch.setenv("OPA_BIN", str(bare / "missing"))
    with pytest.raises(ConfigError, match=r"\$OPA_BIN is .*not an executable file"):
        opa.find_opa_binary()


def test_path_then_development_build(bare, monkeypatch):
    checkout = bare / "checkout"
    (checkout / "scripts").mkdir(parents=True)
    (checkout / "pyproject.toml").write_text("")
    (checkout / "scripts" / "build-opa.sh").write_text("")
    monkeypatch.setattr(opa, "__file__", str(checkout / "enforcer" / "policy" / "opa.py"))
    dev = checkout / ".cache" / "opa" / "bin" / "opa"
    assert opa.development_opa() == dev
    with pytest.raises(ConfigError, match=f"looked at policy.opa.binary, \\$OPA_BIN, PATH, {dev}"):
        opa.find_opa_binary()
    _exe(dev)
    assert opa.find_opa_binary() == str(dev)
    on_path = _exe(bare / "bin" / "opa")
    monkeypatch.setenv("PATH", str(on_path.parent))
    assert opa.find_opa_binary() == str(on_path)


def test_build_cache_from_the_environment(bare, monkeypatch):
    cache = bare / "cache"
    monkeypatch.setenv("AECL_OPA_CACHE", str(cache))
    assert opa.development_opa() == cache / "bin" / "opa"
    built = _exe(cache / "bin" / "opa")
    assert opa.find_opa_binary() == str(built)


def test_this_checkout_finds_its_build():
    dev = opa.development_opa()
    if "AECL_OPA_CACHE" not in os.environ:
        assert dev == Path(__file__).resolve().parents[2] / ".cache" / "opa" / "bin" / "opa"
