"""The parallel verifier finds the same first failure, on the same line, as
the serial one, wherever the worker ranges fall."""

from __future__ import annotations

import pytest

from enforcer.audit.keys import generate_keypair, load_public_key, load_signing_key
from enforcer.audit.log import AuditLog
from enforcer.audit.verify import _ranges, verify_file
from enforcer.errors import VerificationError

N = 9000  # about 5 MB: above the size where the verifier goes parallel


@pytest.fixture(scope="module")
def big_log(tmp_path_factory):
    d = tmp_path_factory.mktemp("big")
    priv, pub = generate_keypair(d / "k")
    # Checkpoints only on close, so line k holds entry k - 1 for the edits below.
    log = AuditLog(d / "a.jsonl", load_signing_key(priv), checkpoint_every=10**9, checkpoint_interval_s=3600)
    futures = [log.submit({"kind": "decision", "i": i, "reason": "x" * 400}) for i in range(N)]
    for f in futures:
        f.result()
    log.close()
    return d / "a.jsonl", [load_public_key(pub)]


@pytest.mark.parametrize("workers", [1, 2])
def test_big_log_verifies(big_log, workers):
    path, keys = big_log
    assert verify_file(path, keys, workers=workers) == N + 1


def _tampered(big_log, tmp_path, edit):
    path, keys = big_log
    lines = path.read_bytes().split(b"\n")[:-1]
    out = tmp_path / "t.jsonl"
    out.write_bytes(b"\n".join(edit(lines)) + b"\n")
    return out, keys


@pytest.mark.parametrize(("edit", "line", "kind"), [
    (lambda ls: [*ls[:7776], ls[7776].replace(b'"i":7776', b'"i":7777'), *ls[7777:]], 7777, "hash"),
    (lambda ls: [*ls[:4000], *ls[4001:]], 4001, "sequence"),
    (lambda ls: [*ls[:5000], ls[5001], ls[5000], *ls[5002:]], 5001, "sequence"),
    (lambda ls: [*ls[:8998], b"{not json", *ls[8999:]], 8999, "malformed"),
])
@pytest.mark.parametrize("workers", [1, 2])
def test_first_failure_is_named_identically(big_log, tmp_path, edit, line, kind, workers):
    path, keys = _tampered(big_log, tmp_path, edit)
    with pytest.raises(VerificationError) as err:
        verify_file(path, keys, workers=workers)
    assert (err.value.line, err.value.kind) == (line, kind)


def test_ranges_cover_the_file_on_line_boundaries(big_log):
    path, _ = big_log
    data = path.read_bytes()
    ranges = _ranges(path, 16)
    assert ranges[0][0] == 0 and ranges[-1][1] == len(data)
    for (a, b), (c, _) in zip(ranges, ranges[1:]):
        assert b == c and data[b - 1:b] == b"\n"
