"""Offline verification of an audit log: every signature and every chain link.

Steps for each line n (1-based), in this order:
  1. parse: the line is a JSON object with the entry fields
  2. sequence: seq == n - 1
  3. chain: prev == leaf_hash of line n - 1 (GENESIS_PREV for line 1)
  4. hash: leaf_hash == SHA-256(0x00 || canonical({seq, prev, record}))
  5. key: kid names a trusted public key
  6. signature: Ed25519 over SIGNATURE_DOMAIN || leaf_hash verifies
The first failure raises VerificationError naming the line and the class.
Without an externally kept checkpoint, truncation of the tail cannot be seen.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from enforcer.audit.entry import GENESIS_PREV, leaf_hash, signature_message, signed_body
from enforcer.audit.keys import key_id
from enforcer.errors import AuditError, VerificationError

# One exit code per failure class, for scripts that act on the kind of failure.
EXIT_CODES = {
    "malformed": 10,
    "sequence": 11,
    "chain": 12,
    "hash": 13,
    "unknown_key": 14,
    "signature": 15,
}
_FIELDS = {"seq", "prev", "record", "leaf_hash", "kid", "sig"}


def verify_lines(lines: Iterable[bytes], keys: Iterable[Ed25519PublicKey]) -> int:
    """Verify entries in order; returns how many verified, raises on the first failure."""
    trusted = {key_id(k): k for k in keys}
    prev = GENESIS_PREV
    n = 0
    for n, raw in enumerate(lines, start=1):
        try:
            entry = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise VerificationError(n, "malformed", f"not JSON: {e}") from None
        if not isinstance(entry, dict) or set(entry) != _FIELDS or not isinstance(entry["record"], dict):
            raise VerificationError(n, "malformed", f"entry must have exactly the fields {sorted(_FIELDS)}")
        if entry["seq"] != n - 1:
            raise VerificationError(n, "sequence", f"seq is {entry['seq']!r}, expected {n - 1}")
        if entry["prev"] != prev:
            raise VerificationError(n, "chain", "prev does not match the hash of the previous entry")
        try:
            leaf = leaf_hash(signed_body(entry["seq"], entry["prev"], entry["record"]))
        except AuditError as e:
            raise VerificationError(n, "malformed", str(e)) from None
        if entry["leaf_hash"] != leaf.hex():
            raise VerificationError(n, "hash", "leaf_hash does not match the entry's content")
        key = trusted.get(entry["kid"])
        if key is None:
            raise VerificationError(n, "unknown_key", f"signed by key id {entry['kid']!r}, which is not trusted")
        try:
            key.verify(base64.b64decode(entry["sig"], validate=True), signature_message(leaf))
        except (InvalidSignature, binascii.Error, ValueError, TypeError):
            raise VerificationError(n, "signature", "Ed25519 signature does not verify") from None
        prev = entry["leaf_hash"]
    return n


def verify_file(path: Path, keys: Iterable[Ed25519PublicKey]) -> int:
    try:
        with path.open("rb") as f:
            return verify_lines((line.rstrip(b"\n") for line in f), keys)
    except OSError as e:
        raise AuditError(f"{path}: cannot read: {e.strerror}") from e
