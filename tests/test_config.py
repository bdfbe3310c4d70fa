"""Paths in a config file resolve against its directory; which fields are
paths is declared by their type (ConfigPath), not by a list to keep in step."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel

from enforcer.config import ConfigPath, ServiceConfig, load_config


def _write(directory: Path, doc: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "aecl.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _minimal(**extra) -> dict:
    doc = {
        "agents_dir": "agents",
        "tool_registry": "tools.yaml",
        "policy": {"rego_dir": "rego"},
        "audit": {"path": "var/audit.jsonl", "signing_key": "keys/audit.key"},
        "state": {"sqlite_path": "var/state.db"},
        "identity": {"token_signing_key": "keys/token.key"},
        "plaintext": True,
    }
    for key, value in extra.items():
        doc[key] = {**doc.get(key, {}), **value} if isinstance(value, dict) else value
    return doc


def test_relative_paths_resolve_against_the_file_even_nested(tmp_path):
    conf = tmp_path / "conf"
    config = load_config(_write(conf, _minimal(
        policy={"rego_dir": "rego", "opa": {"bundle": "build/bundle.tar.gz"}},
        audit={"path": "var/audit.jsonl", "signing_key": "keys/audit.key", "previous_signing_key": "../old/audit.key",
               "checkpoint_path": "ship/audit.checkpoint"},
        sandbox={"profile": "profiles/strict.yaml"},
        identity={"token_signing_key": "keys/token.key", "credentials_dir": "../var/credentials"},
    )))
    base = conf.resolve()
    assert config.agents_dir == base / "agents"
    assert config.tool_registry == base / "tools.yaml"
    assert config.policy.rego_dir == base / "rego"
    assert config.policy.opa.bundle == base / "build/bundle.tar.gz"
    assert config.audit.path == base / "var/audit.jsonl"
    assert config.audit.signing_key == base / "keys/audit.key"
    assert config.audit.previous_signing_key == tmp_path.resolve() / "old/audit.key"
    assert config.audit.checkpoint_path == base / "ship/audit.checkpoint"
    assert config.state.sqlite_path == base / "var/state.db"
    assert config.sandbox.profile == base / "profiles/strict.yaml"
    assert config.identity.token_signing_key == base / "keys/token.key"
    assert config.identity.credentials_dir == tmp_path.resolve() / "var/credentials"


def test_tls_paths_resolve_against_the_file(tmp_path):
    conf = tmp_path / "conf"
    config = load_config(_write(conf, _minimal(
        plaintext=False, tls={"cert": "certs/server.pem", "key": "certs/server.key", "client_ca": "../ca.pem"})))
    base = conf.resolve()
    assert config.tls is not None
    assert config.tls.cert == base / "certs/server.pem" and config.tls.key == base / "certs/server.key"
    assert config.tls.client_ca == tmp_path.resolve() / "ca.pem"


def test_absolute_paths_stay(tmp_path):
    elsewhere = (tmp_path / "elsewhere").resolve()
    config = load_config(_write(tmp_path / "conf", _minimal(
        audit={"path": str(elsewhere / "audit.jsonl"), "signing_key": str(elsewhere / "audit.key")},
        sandbox={"profile": str(elsewhere / "profile.yaml")},
    )))
    assert config.audit.path == elsewhere / "audit.jsonl"
    assert config.audit.signing_key == elsewhere / "audit.key"
    assert config.sandbox.profile == elsewhere / "profile.yaml"


def test_unset_optional_paths_stay_unset(tmp_path):
    config = load_config(_write(tmp_path, _minimal()))
    assert config.sandbox.profile is None and config.policy.opa.bundle is None
    assert config.audit.previous_signing_key is None and config.audit.checkpoint_path is None
    assert config.identity.credentials_dir is None and config.tls is None


def test_paths_built_in_code_stay_as_given():
    config = ServiceConfig.model_validate(_minimal())
    assert config.agents_dir == Path("agents") and config.audit.path == Path("var/audit.jsonl")
    assert config.identity.token_signing_key == Path("keys/token.key")


def test_a_new_model_with_config_paths_resolves_without_any_list(tmp_path):
    class Inner(BaseModel):
        file: ConfigPath
        maybe: ConfigPath | None = None
        many: list[ConfigPath] = []

    class Outer(BaseModel):
        inner: Inner
        top: ConfigPath

    doc = {"inner": {"file": "a/b.txt", "many": ["x", "/abs/y"]}, "top": "../c"}
    resolved = Outer.model_validate(doc, context={"base": tmp_path})
    assert resolved.inner.file == tmp_path.resolve() / "a/b.txt"
    assert resolved.inner.maybe is None
    assert resolved.inner.many == [tmp_path.resolve() / "x", Path("/abs/y")]
    assert resolved.top == tmp_path.resolve().parent / "c"
    assert Outer.model_validate(doc).top == Path("../c")



def test_the_mcp_front_end_listens_on_loopback_only(tmp_path):
    import pytest

    from enforcer.errors import ConfigError
    with pytest.raises(ConfigError, match="mcp.listen: the MCP front end is served over plain HTTP"):
        load_config(_write(tmp_path, _minimal(mcp={"listen": "0.0.0.0:8090"})))
    assert load_config(_write(tmp_path / "ok", _minimal(mcp={"listen": "127.0.0.1:8090"}))).mcp.listen \
        == "127.0.0.1:8090"
