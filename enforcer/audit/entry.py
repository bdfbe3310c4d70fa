"""The log entry format, shared by the writer and the verifier.

A line is one JSON object whose bytes are, exactly,

    BODY without its closing brace
    + ,"leaf_hash":"<64 hex>","kid":"<16 hex>","sig":"<88 base64>"}

where BODY = canonical({"prev", "record", "seq"}) (RFC 8785, so the keys of
BODY come out sorted) and

    seq        0-based position in the log
    prev       hex leaf hash of the previous entry (64 zeros for the first)
    record     the ActionLog record
    leaf_hash  hex SHA-256(0x00 || BODY): the RFC 6962 leaf of the Merkle tree
    kid        key id of the signer (enforcer.audit.keys.key_id)
    sig        base64 Ed25519 signature over SIGNATURE_DOMAIN || leaf_hash

Because the signed bytes are in the line verbatim, a verifier hashes them
instead of re-canonicalising every record, and anyone can still re-derive
BODY from the parsed record with any RFC 8785 implementation. The chain links
each entry to the previous one's leaf hash, so a deleted, inserted or
reordered line breaks the chain at that line.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from typing import Any

from enforcer.audit.canonical import canonical_json
from enforcer.audit.merkle import leaf_hash  # SHA-256(LEAF_PREFIX || BODY), RFC 6962

SIGNATURE_DOMAIN = b"aecl-audit-entry-v1\n"
GENESIS_PREV = "0" * 64
# The fixed-shape tail after the body; everything before it is BODY minus "}".
TAIL = re.compile(rb',"leaf_hash":"([0-9a-f]{64})","kid":"([0-9a-f]{16})","sig":"([A-Za-z0-9+/]{86}==)"\}\Z')


TRANSITION_DOMAIN = b"aecl-key-transition-v1\n"


def transition_message(old_kid: str, new_kid: str, new_public_raw: bytes) -> bytes:
    """What the outgoing key signs to hand the log over to the incoming one."""
    return TRANSITION_DOMAIN + old_kid.encode() + b"\n" + new_kid.encode() + b"\n" + new_public_raw


def signed_body(seq: int, prev: str, record: dict[str, Any]) -> bytes:
    return canonical_json({"seq": seq, "prev": prev, "record": record})


def signature_message(leaf: bytes) -> bytes:
    return SIGNATURE_DOMAIN + leaf


def split_line(line: bytes) -> tuple[bytes, str, str, str] | None:
    """(BODY, leaf_hash, kid, sig) of a line without its newline, or None
    when the line does not have the entry shape."""
    m = TAIL.search(line)
    if m is None or not line.startswith(b"{"):
        return None
    return line[: m.start()] + b"}", m.group(1).decode(), m.group(2).decode(), m.group(3).decode()


@dataclass(frozen=True)
class Entry:
    seq: int
    prev: str
    record: dict[str, Any]
    leaf_hash: str
    kid: str
    sig: str
    body: bytes

    def to_line(self) -> bytes:
        return (self.body[:-1] + b',"leaf_hash":"' + self.leaf_hash.encode() + b'","kid":"' + self.kid.encode()
                + b'","sig":"' + self.sig.encode() + b'"}\n')


def make_entry(seq: int, prev: str, record: dict[str, Any], sign, kid: str) -> Entry:
    body = signed_body(seq, prev, record)
    leaf = leaf_hash(body)
    sig = base64.b64encode(sign(signature_message(leaf))).decode("ascii")
    return Entry(seq=seq, prev=prev, record=record, leaf_hash=leaf.hex(), kid=kid, sig=sig, body=body)
