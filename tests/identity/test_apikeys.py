"""API keys: format, checking, hash files and key files, with real hashing
and real files."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from enforcer.errors import ConfigError, Unauthenticated
from enforcer.identity.apikeys import (
    KeyHash,
    check_key,
    generate_key,
    hash_file_path,
    parse_key,
    read_hash_file,
    write_hash_file,
    write_key_file,
)

NOW = 1_796_166_000.0  # 2026-12-01T23:00:00Z


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_generated_key_round_trips():
    text, h = generate_key(NOW)
    assert text.startswith(f"aecl_{h.key_id}_")
    assert parse_key(text) == h.key_id
    assert check_key(text, {h.key_id: h}) is h
    assert h.sha256 == hashlib.sha256(text.encode()).hexdigest()
    assert h.created_at == "2026-12-01T23:00:00.000000Z"
    assert h.created_ts == NOW


def test_secret_is_256_bits_and_key_id_48():
    for _ in range(50):  # enough draws that a secret containing '_' is parsed too
        text, h = generate_key()
        secret = text.split("_", 2)[2]
        assert len(secret) == 43
        assert len(base64.urlsafe_b64decode(secret + "=")) == 32
        assert len(bytes.fromhex(h.key_id)) == 6
        assert parse_key(text) == h.key_id


def test_keys_are_unique():
    texts = {generate_key()[0] for _ in range(200)}
    assert len(texts) == 200


def test_wrong_secret_is_bad_credential_and_not_echoed():
    _, h = generate_key(NOW)
    other, _ = generate_key(NOW)
    forged = f"aecl_{h.key_id}_{other.split('_', 2)[2]}"
    with pytest.raises(Unauthenticated) as e:
        check_key(forged, {h.key_id: h})
    assert e.value.reason == "bad_credential"
    assert h.key_id in str(e.value)
    assert forged.split("_", 2)[2] not in str(e.value)


def test_unknown_key_id():
    _, h = generate_key(NOW)
    other, _ = generate_key(NOW)
    with pytest.raises(Unauthenticated) as e:
        check_key(other, {h.key_id: h})
    assert e.value.reason == "unknown_key"
    assert other.split("_", 2)[2] not in str(e.value)


@pytest.mark.parametrize("text", [
    "", "aecl", "aecl_", "aecl__", "aecl_0123456789ab", "aecl_0123456789ab_",
    "AECL_0123456789ab_" + "A" * 43, "aecl_0123456789AB_" + "A" * 43, "aecl_0123456789a_" + "A" * 43,
    "aecl_0123456789ab_" + "A" * 42, "aecl_0123456789ab_" + "A" * 44, "aecl_0123456789ab_" + "A" * 42 + "B",
    "aecl_0123456789ab_" + "A" * 42 + "=", "aecl_0123456789ab_" + "A" * 43 + "\n", " aecl_0123456789ab_" + "A" * 43,
    "aecl_0123456789ab_" + "A" * 41 + "+A",
])
def test_malformed_keys(text):
    with pytest.raises(Unauthenticated) as e:
        parse_key(text)
    assert e.value.reason == "malformed_credential"


def test_malformed_message_never_echoes_the_text():
    text, _ = generate_key()
    typo = text + "x"
    with pytest.raises(Unauthenticated) as e:
        parse_key(typo)
    assert text.split("_", 2)[2] not in str(e.value)


@given(st.text())
def test_arbitrary_text_raises_only_unauthenticated(text):
    _, h = generate_key(NOW)
    try:
        check_key(text, {h.key_id: h})
    except Unauthenticated:
        pass
    else:  # pragma: no cover - would be a forgery
        pytest.fail("an arbitrary text was accepted")


@given(st.from_regex(r"\Aaecl_[0-9a-f]{12}_[A-Za-z0-9_-]{40,46}\Z"))
def test_near_keys_raise_only_unauthenticated(text):
    with pytest.raises(Unauthenticated):
        check_key(text, {})


def test_key_hash_dict_round_trip_and_strictness():
    _, h = generate_key(NOW)
    assert KeyHash.from_dict(h.to_dict()) == h
    for field, bad in [("key_id", "0123"), ("sha256", "ab" * 31), ("created_at", "yesterday"),
                       ("created_at", "2026-12-01T23:00:00")]:
        with pytest.raises(ValueError, match=field):
            KeyHash.from_dict({**h.to_dict(), field: bad})
    with pytest.raises(ValueError, match="unexpected"):
        KeyHash.from_dict({**h.to_dict(), "secret": "x"})
    with pytest.raises(ValueError, match="missing"):
        KeyHash.from_dict({"key_id": h.key_id, "sha256": h.sha256})


def test_hash_file_round_trip_mode_and_dirs(tmp_path):
    creds = tmp_path / "creds"
    path = hash_file_path(creds, "agent", "finance_agent_v2")
    assert path == creds / "hashes" / "agent.finance_agent_v2.yaml"
    hashes = [generate_key(NOW)[1], generate_key(NOW + 60)[1]]
    write_hash_file(path, "agent", "finance_agent_v2", hashes)
    assert read_hash_file(path) == hashes
    assert read_hash_file(path, kind="agent", principal_id="finance_agent_v2") == hashes
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700 and mode(creds) == 0o700
    doc = yaml.safe_load(path.read_text())
    assert doc["kind"] == "agent" and doc["id"] == "finance_agent_v2"
    assert isinstance(doc["api_keys"][0]["created_at"], str)  # quoted, not a YAML timestamp
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left behind


def test_hash_file_rewrite_replaces(tmp_path):
    path = hash_file_path(tmp_path, "approver", "alice")
    write_hash_file(path, "approver", "alice", [generate_key(NOW)[1]])
    new = [generate_key(NOW)[1]]
    write_hash_file(path, "approver", "alice", new)
    assert read_hash_file(path) == new
    write_hash_file(path, "approver", "alice", [])
    assert read_hash_file(path) == []


@pytest.mark.parametrize("kind, pid", [("robot", "a"), ("agent", "../x"), ("agent", "a/b"), ("agent", "")])
def test_hash_file_path_refuses_bad_names(tmp_path, kind, pid):
    with pytest.raises(ValueError):
        hash_file_path(tmp_path, kind, pid)


def _valid_doc() -> dict:
    return {"kind": "admin", "id": "root", "api_keys": [generate_key(NOW)[1].to_dict()]}


@pytest.mark.parametrize("mutate, needle", [
    (lambda d: d.pop("kind"), "kind"),
    (lambda d: d.update(kind="robot"), "kind"),
    (lambda d: d.update(id=7), "id"),
    (lambda d: d.update(extra=1), "exactly"),
    (lambda d: d.update(api_keys={"a": 1}), "api_keys"),
    (lambda d: d["api_keys"][0].update(sha256="nope"), "sha256"),
    (lambda d: d["api_keys"][0].pop("created_at"), "created_at"),
    (lambda d: d["api_keys"].append(dict(d["api_keys"][0])), "duplicate"),
])
def test_hash_file_strict_errors_name_the_file(tmp_path, mutate, needle):
    doc = _valid_doc()
    mutate(doc)
    path = tmp_path / "admin.root.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError) as e:
        read_hash_file(path)
    assert str(path) in str(e.value)
    assert needle in str(e.value)


def test_unquoted_yaml_timestamp_is_refused(tmp_path):
    h = generate_key(NOW)[1]
    path = tmp_path / "agent.a.yaml"
    path.write_text(f"kind: agent\nid: a\napi_keys:\n- key_id: '{h.key_id}'\n  sha256: {h.sha256}\n"
                    f"  created_at: 2026-12-01T23:00:00Z\n")
    with pytest.raises(ConfigError, match="created_at"):
        read_hash_file(path)


def test_hash_file_for_another_principal_is_refused(tmp_path):
    path = hash_file_path(tmp_path, "agent", "a")
    write_hash_file(path, "agent", "b", [generate_key(NOW)[1]])
    with pytest.raises(ConfigError, match="expected 'a'"):
        read_hash_file(path, kind="agent", principal_id="a")


@pytest.mark.parametrize("text", ["", "kind: [", "- 1\n- 2\n"])
def test_hash_file_not_a_document(tmp_path, text):
    path = tmp_path / "h.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=str(path)):
        read_hash_file(path)


def test_missing_hash_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        read_hash_file(tmp_path / "nope.yaml")


def test_key_file_is_0600_one_line_and_never_overwritten(tmp_path):
    text, _ = generate_key()
    path = tmp_path / "agent.key"
    old = os.umask(0o022)
    try:
        write_key_file(path, text)
    finally:
        os.umask(old)
    assert path.read_text() == text + "\n"
    assert mode(path) == 0o600
    with pytest.raises(FileExistsError):
        write_key_file(path, generate_key()[0])
    assert path.read_text() == text + "\n"
