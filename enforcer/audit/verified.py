"""The one way an auditor's command reads a log: verified first, then typed.

`read_verified` verifies the whole log (every segment) exactly as `aecl
verify` does, optionally against the auditor's checkpoint, then reads its
entries back through the record types (enforcer.audit.records.parse_record).
A record that does not parse is a verification failure of the `malformed`
class, named with its line (and file, in a segmented log). The second read is
bound to the first: every line must hash to the leaf hash that verified, and
the leaves must rebuild the verified tree, or the log changed while it was
read and nothing is returned.

An empty log, or one with no file at all, raises NothingVerified: a command
never reports on a log it could not verify.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from enforcer.audit.entry import leaf_hash, split_line
from enforcer.audit.files import log_files, read_lines
from enforcer.audit.merkle import CompactTree
from enforcer.audit.records import Record, parse_record
from enforcer.audit.verify import NothingVerified, VerifyReport, verify_log
from enforcer.errors import AuditUnavailable, RecordError, VerificationError


@dataclass(frozen=True)
class VerifiedEntry:
    seq: int
    file: str  # the name of the file holding it (a sealed segment or the active file)
    line: int  # 1-based, within that file
    leaf_hash: bytes
    kid: str
    record: Record
    raw: bytes  # the line as written (without its newline): what an inclusion proof covers


@dataclass(frozen=True)
class VerifiedLog:
    path: Path
    report: VerifyReport
    entries: tuple[VerifiedEntry, ...]

    def leaves(self) -> list[bytes]:
        return [e.leaf_hash for e in self.entries]


def log_exists(path: Path) -> bool:
    return any(f.exists() for f in log_files(path))


def read_verified(path: Path, keys: Iterable[Ed25519PublicKey], *, trusted_note: bytes | None = None,
                  progress: Callable[[int], None] | None = None) -> VerifiedLog:
    """Verify the log, then return its entries as typed records. Raises
    VerificationError (with its class), NothingVerified or AuditUnavailable."""
    if not log_exists(path):
        raise NothingVerified(f"{path}: no such log (no file and no segments): nothing was verified")
    report = verify_log(path, keys, trusted_note=trusted_note, progress=progress)
    if report.entries == 0:
        raise NothingVerified(f"{path}: the log is empty: nothing was verified")
    files = log_files(path)
    entries: list[VerifiedEntry] = []
    tree = CompactTree()
    for f in files:
        where = f"in {f.name}: " if len(files) > 1 else ""
        for n, raw in enumerate(read_lines(f), start=1):
            parts = split_line(raw)
            leaf = leaf_hash(parts[0]) if parts is not None else b""
            if parts is None or leaf.hex() != parts[1] or len(entries) >= report.entries:
                raise _changed(path)
            try:
                record = parse_record(json.loads(raw)["record"])
            except RecordError as e:
                raise VerificationError(n, "malformed", f"{where}record: {e}") from None
            entries.append(VerifiedEntry(len(entries), f.name, n, leaf, parts[2], record, raw))
            tree.append(leaf)
    if tree.size != report.entries or tree.root() != report.root:
        raise _changed(path)
    return VerifiedLog(path, report, tuple(entries))


def _changed(path: Path) -> AuditUnavailable:
    return AuditUnavailable(f"{path}: the log changed while it was read; run the command again")
