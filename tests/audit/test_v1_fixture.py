"""Logs written before the typed records (schema 1, committed under
tests/fixtures/logs by the v1 code) still verify with both verifiers and
read through the record types."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from enforcer.audit.files import log_files
from enforcer.audit.records import KINDS, parse_record
from tests.conftest import REPO

FIXTURES = REPO / "tests" / "fixtures" / "logs"


def aecl(*args):
    return subprocess.run([sys.executable, "-m", "enforcer", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name", ["v1single", "v1seg"])
def test_aecl_verify_accepts_a_v1_log_against_its_checkpoint(name):
    d = FIXTURES / name
    out = aecl("verify", "--log", str(d / "audit.jsonl"), "--pubkey", str(d / "first.pub"),
               "--checkpoint", str(d / "audit.jsonl.checkpoint"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "OK" in out.stdout and "key_transition" not in out.stderr


def test_the_standalone_verifier_accepts_the_v1_log():
    d = FIXTURES / "v1single"
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "verify"), "--log", str(d / "audit.jsonl"),
                          "--pubkey", str(d / "first.pub"), "--pubkey", str(d / "second.pub"),
                          "--checkpoint", str(d / "audit.jsonl.checkpoint")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith("OK")


@pytest.mark.parametrize("name", ["v1single", "v1seg"])
def test_every_v1_record_reads_through_its_type(name):
    seen = set()
    for path in log_files(FIXTURES / name / "audit.jsonl"):
        for line in path.read_bytes().splitlines():
            raw = json.loads(line)["record"]
            record = parse_record(raw)
            assert record.schema == 1 and record.principal is None
            assert record.event_id == raw["event_id"]
            seen.add(record.KIND)
            # Nothing the v1 writer recorded is lost in the typed form.
            typed = record.to_dict()
            assert {k: v for k, v in typed.items() if k in raw} == raw
    # kinds v1 wrote no example of, or had not yet
    assert seen == set(KINDS) - {"policy_reload", "service", "token_renewed", "auth_refused", "revocation",
                                "connector_request", "approval", "notification", "duplicate", "rollback"}


def test_a_tampered_v1_log_still_fails(tmp_path):
    d = FIXTURES / "v1single"
    lines = (d / "audit.jsonl").read_bytes().splitlines(keepends=True)
    lines[3] = lines[3].replace(b'"outcome":"succeeded"', b'"outcome":"failed"', 1)
    assert b'"outcome":"failed"' in lines[3]
    (tmp_path / "audit.jsonl").write_bytes(b"".join(lines))
    out = aecl("verify", "--log", str(tmp_path / "audit.jsonl"), "--pubkey", str(d / "first.pub"))
    assert out.returncode != 0 and "line 4" in (out.stdout + out.stderr)
