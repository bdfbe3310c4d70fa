"""Key rotation: a transition entry signed by both keys lets an auditor who
trusts only the first key verify the whole log."""

from __future__ import annotations

import json
import subprocess
import sys

from enforcer.audit.keys import generate_keypair, load_signing_key
from enforcer.audit.log import AuditLog
from tests.conftest import REPO


def append(path, key, n, previous=None, start=0):
    log = AuditLog(path, load_signing_key(key), previous_key=load_signing_key(previous) if previous else None,
                   checkpoint_every=25)
    for i in range(start, start + n):
        log.append({"i": i})
    log.close()


def verify(path, *pubs, checkpoint=None):
    args = [sys.executable, "-m", "enforcer", "verify", "--log", str(path)]
    for p in pubs:
        args += ["--pubkey", str(p)]
    if checkpoint:
        args += ["--checkpoint", str(checkpoint)]
    return subprocess.run(args, capture_output=True, text=True, cwd=REPO)


def test_transition_lets_the_old_key_vouch_for_the_new(tmp_path):
    old, old_pub = generate_keypair(tmp_path / "old")
    new, new_pub = generate_keypair(tmp_path / "new")
    path = tmp_path / "audit.jsonl"
    append(path, old, 30)
    append(path, new, 40, previous=old, start=30)
    records = [json.loads(line)["record"] for line in path.read_bytes().splitlines()]
    [transition] = [r for r in records if r.get("kind") == "key_transition"]
    assert transition["old_kid"] != transition["new_kid"]
    r = verify(path, old_pub, checkpoint=tmp_path / "audit.jsonl.checkpoint")
    assert r.returncode == 0, r.stderr
    # Without the transition, the old key alone cannot vouch for later entries.
    third, _ = generate_keypair(tmp_path / "third")
    append(path, third, 1, start=70)
    r = verify(path, old_pub)
    assert r.returncode == 14 and "unknown_key" in r.stderr


def test_forged_transition_is_refused(tmp_path):
    old, old_pub = generate_keypair(tmp_path / "old")
    attacker, _ = generate_keypair(tmp_path / "attacker")
    other, _ = generate_keypair(tmp_path / "other")
    path = tmp_path / "audit.jsonl"
    append(path, old, 5)
    # The attacker holds neither key of the log: its "outgoing key" is its own.
    log = AuditLog(path, load_signing_key(attacker), previous_key=load_signing_key(other))
    log.append({"i": 99})  # the previous key does not match the log's: no transition written
    log.close()
    assert not any(b"key_transition" in line for line in path.read_bytes().splitlines())
    r = verify(path, old_pub)
    assert r.returncode == 14
