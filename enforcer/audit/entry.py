"""The log entry format, shared by the writer and the verifier.

A line is one JSON object:
    seq        0-based position in the log
    prev       hex hash of the previous entry (64 zeros for the first)
    record     the ActionLog record
    leaf_hash  hex SHA-256(0x00 || canonical({seq, prev, record}))  (RFC 6962 leaf)
    kid        key id of the signer
    sig        base64 Ed25519 signature over SIGNATURE_DOMAIN || leaf_hash

The chain links each entry to the previous one's leaf hash, so a deleted,
inserted or reordered line breaks the chain at that line.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from enforcer.audit.canonical import canonical_json

LEAF_PREFIX = b"\x00"
SIGNATURE_DOMAIN = b"aecl-audit-entry-v1\n"
GENESIS_PREV = "0" * 64


def signed_body(seq: int, prev: str, record: dict[str, Any]) -> bytes:
    return canonical_json({"seq": seq, "prev": prev, "record": record})


def leaf_hash(body: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + body).digest()


def signature_message(leaf: bytes) -> bytes:
    return SIGNATURE_DOMAIN + leaf


@dataclass(frozen=True)
class Entry:
    seq: int
    prev: str
    record: dict[str, Any]
    leaf_hash: str
    kid: str
    sig: str

    def to_line(self) -> bytes:
        return (
            json.dumps(
                {
                    "seq": self.seq,
                    "prev": self.prev,
                    "record": self.record,
                    "leaf_hash": self.leaf_hash,
                    "kid": self.kid,
                    "sig": self.sig,
                },
                separators=(",", ":"),
                ensure_ascii=False,
                allow_nan=False,
            ).encode("utf-8")
            + b"\n"
        )


def make_entry(seq: int, prev: str, record: dict[str, Any], sign, kid: str) -> Entry:
    leaf = leaf_hash(signed_body(seq, prev, record))
    sig = base64.b64encode(sign(signature_message(leaf))).decode("ascii")
    return Entry(seq=seq, prev=prev, record=record, leaf_hash=leaf.hex(), kid=kid, sig=sig)
