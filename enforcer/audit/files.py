"""The files of one audit log and its lines, read in log order.

A log at `path` is its sealed segments `<name>.seg-<first seq, 12 digits>`
beside it, oldest first (their names sort by first seq), then the active file
`path` itself. Every reader (verify, replay, the audit CLI, the writer's
restart scan) takes the file list from here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from enforcer.errors import AuditUnavailable

SEGMENT_INFIX = ".seg-"
SEGMENT_DIGITS = 12


def segment_path(path: Path, first_seq: int) -> Path:
    """Where the segment of `path` whose first entry is `first_seq` is sealed."""
    return path.with_name(f"{path.name}{SEGMENT_INFIX}{first_seq:0{SEGMENT_DIGITS}d}")


def sealed_segments(path: Path) -> list[Path]:
    """The sealed segments of a log, oldest first (their names sort by first seq)."""
    return sorted(path.parent.glob(path.name + SEGMENT_INFIX + "[0-9]" * SEGMENT_DIGITS))


def log_files(path: Path) -> list[Path]:
    """Every file of the log in order: sealed segments oldest first, then the active file."""
    return [*sealed_segments(path), path]


def read_lines(path: Path) -> Iterator[bytes]:
    """The lines of one file, without their newline. A file that cannot be
    opened or read raises AuditUnavailable (nothing about its content is known)."""
    try:
        with path.open("rb") as f:
            for line in f:
                yield line[:-1] if line.endswith(b"\n") else line
    except OSError as e:
        raise AuditUnavailable(f"{path}: cannot read: {e.strerror}") from e


def iter_log_lines(path: Path) -> Iterator[bytes]:
    """Every line of a log, across its sealed segments, oldest first."""
    for f in log_files(path):
        yield from read_lines(f)
