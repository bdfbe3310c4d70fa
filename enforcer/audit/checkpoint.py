"""Signed checkpoints of the audit log: C2SP tlog-checkpoint in a C2SP signed-note.

A checkpoint commits to a log's Merkle tree head in the text format every
transparency-log tool reads (https://c2sp.org/tlog-checkpoint)::

    <origin>
    <tree size, decimal>
    <base64 of the 32-byte root hash>
    [extension lines]

and is signed as a note (https://c2sp.org/signed-note): the text, a blank line,
then one line per signature, "— <key name> <base64(key ID || Ed25519 signature)>",
where the key ID is SHA-256(name || 0x0A || 0x01 || public key)[:4].

Parsing follows Go's reference implementation (golang.org/x/mod/sumdb/note,
`Open`) rule for rule: the whole note must be UTF-8 without control characters
other than newline; the text ends at the last blank line; at most 100 signature
lines; signatures from unknown keys are ignored; a known key's bad signature
rejects the note; a note with no verified signature is rejected. One deliberate
difference: Go skips a known key's repeated signatures without checking them,
here every signature from a known key is verified (the spec's "MUST verify").
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from typing import Iterable, NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from enforcer.audit.keys import raw_public_bytes
from enforcer.errors import IntegrityError

ALG_ED25519 = 0x01
MAX_SIGNATURES = 100  # Go's limit; the spec asks for at least 16
SIG_PREFIX = "\u2014 "  # em dash, space
HASH_SIZE = 32

# Go's unicode.IsSpace: Latin-1 spaces plus the White_Space property.
_SPACES = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
# RFC 4648 section 4 with mandatory padding, as Go's base64.StdEncoding reads
# a line that cannot hold CR or LF.
_B64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_HEX8 = re.compile(r"[0-9A-Fa-f]{8}")


class CheckpointError(IntegrityError):
    """A checkpoint, signed note or note key is malformed or fails verification."""

    code = "checkpoint_invalid"


class MalformedNoteError(CheckpointError):
    """The note does not follow the signed-note syntax."""

    code = "note_malformed"


class UnverifiedNoteError(CheckpointError):
    """The note parsed but carries no signature from a known key."""

    code = "note_unverified"


class InvalidSignatureError(CheckpointError):
    """A signature from a known key does not verify."""

    code = "note_signature_invalid"

    def __init__(self, name: str, key_hash: int) -> None:
        super().__init__(f"invalid signature for key {name}+{key_hash:08x}")
        self.name = name
        self.key_hash = key_hash


def is_valid_name(name: str) -> bool:
    """Key names: non-empty, no Unicode space, no '+'."""
    return bool(name) and "+" not in name and not any(c in _SPACES for c in name)


def _b64decode(s: str) -> bytes | None:
    if not _B64.fullmatch(s):
        return None
    try:
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        return None


def _check_text(text: str, what: str) -> None:
    if any(ord(c) < 0x20 and c != "\n" for c in text):
        raise CheckpointError(f"{what} contains a control character")


def key_hash(name: str, public_key: bytes) -> int:
    """Key ID per signed-note: SHA-256(name || 0x0A || 0x01 || public key)[:4], big-endian."""
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not is_valid_name(name):
        raise CheckpointError(f"invalid note key name {name!r}: must be non-empty, without spaces or '+'")
    _check_text(name, "note key name")


class NoteVerifier:
    """An Ed25519 note verifier: a key name and a public key."""

    def __init__(self, name: str, public_key: Ed25519PublicKey) -> None:
        _check_name(name)
        if not isinstance(public_key, Ed25519PublicKey):
            raise CheckpointError("note verifier needs an Ed25519 public key")
        self.name = name
        self.public_key = public_key
        self.key_hash = key_hash(name, raw_public_bytes(public_key))

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            self.public_key.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    def verifier_key_string(self) -> str:
        """The verifier key "<name>+<hex key ID>+<base64(0x01 || public key)>" (Go's note.NewVerifier input)."""
        key = base64.b64encode(bytes([ALG_ED25519]) + raw_public_bytes(self.public_key)).decode()
        return f"{self.name}+{self.key_hash:08x}+{key}"

    def __repr__(self) -> str:
        return f"NoteVerifier({self.name}+{self.key_hash:08x})"


class NoteSigner:
    """An Ed25519 note signer: a key name and a private key."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        _check_name(name)
        if not isinstance(private_key, Ed25519PrivateKey):
            raise CheckpointError("note signer needs an Ed25519 private key")
        self.name = name
        self.private_key = private_key
        self.key_hash = key_hash(name, raw_public_bytes(private_key.public_key()))

    def sign(self, message: bytes) -> bytes:
        return self.private_key.sign(message)

    def verifier(self) -> NoteVerifier:
        return NoteVerifier(self.name, self.private_key.public_key())

    def signer_key_string(self) -> str:
        """Go's secret "PRIVATE+KEY+<name>+<hex key ID>+<base64(0x01 || seed)>". Keep it secret."""
        seed = self.private_key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        key = base64.b64encode(bytes([ALG_ED25519]) + seed).decode()
        return f"PRIVATE+KEY+{self.name}+{self.key_hash:08x}+{key}"

    def __repr__(self) -> str:
        return f"NoteSigner({self.name}+{self.key_hash:08x})"


def _parse_key(s: str, what: str) -> tuple[str, int, bytes]:
    """Shared "<name>+<hash>+<base64 key>" parsing, as Go's NewVerifier/NewSigner."""
    name, _, rest = s.partition("+")
    hash16, _, key64 = rest.partition("+")
    key = _b64decode(key64)
    if not _HEX8.fullmatch(hash16) or key is None or not is_valid_name(name) or not key:
        raise CheckpointError(f"malformed {what}")
    if any(ord(c) < 0x20 for c in name):
        raise CheckpointError(f"malformed {what}")
    if key[0] != ALG_ED25519:
        raise CheckpointError(f"{what}: unknown algorithm {key[0]}")
    if len(key) != 1 + 32:
        raise CheckpointError(f"malformed {what}: Ed25519 key must be 32 bytes")
    return name, int(hash16, 16), key[1:]


def parse_verifier_key(s: str) -> NoteVerifier:
    """Parse "<name>+<hex key ID>+<base64(0x01 || public key)>"; the key ID must match."""
    name, hash_, raw = _parse_key(s, "verifier key")
    if hash_ != key_hash(name, raw):
        raise CheckpointError("verifier key: key ID does not match name and key")
    return NoteVerifier(name, Ed25519PublicKey.from_public_bytes(raw))


def parse_signer_key(s: str) -> NoteSigner:
    """Parse Go's "PRIVATE+KEY+<name>+<hex key ID>+<base64(0x01 || seed)>"."""
    if not s.startswith("PRIVATE+KEY+"):
        raise CheckpointError("malformed signer key")
    name, hash_, seed = _parse_key(s[len("PRIVATE+KEY+"):], "signer key")
    signer = NoteSigner(name, Ed25519PrivateKey.from_private_bytes(seed))
    if hash_ != signer.key_hash:
        raise CheckpointError("signer key: key ID does not match name and key")
    return signer


def sign_note(text: bytes, signers: Iterable[NoteSigner]) -> bytes:
    """The signed note: text (ending in newline), a blank line, one line per signer."""
    signers = list(signers)
    if not signers:
        raise CheckpointError("sign_note needs at least one signer")
    if not text.endswith(b"\n"):
        raise CheckpointError("note text must end with a newline")
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError:
        raise CheckpointError("note text is not UTF-8") from None
    _check_text(decoded, "note text")
    seen: set[tuple[str, int]] = set()
    lines = []
    for s in signers:
        if (s.name, s.key_hash) in seen:
            raise CheckpointError(f"signer {s.name}+{s.key_hash:08x} given twice")
        seen.add((s.name, s.key_hash))
        blob = s.key_hash.to_bytes(4, "big") + s.sign(text)
        lines.append(f"{SIG_PREFIX}{s.name} {base64.b64encode(blob).decode()}\n")
    return text + b"\n" + "".join(lines).encode()


class OpenedNote(NamedTuple):
    text: bytes
    verified: tuple[str, ...]  # names of the known keys whose signatures verified, in note order


def open_note(note: bytes, verifiers: Iterable[NoteVerifier]) -> OpenedNote:
    """Parse a signed note and check its signatures against the known verifiers.

    Raises MalformedNoteError, InvalidSignatureError (a known key's signature
    fails) or UnverifiedNoteError (no signature from a known key)."""
    known: dict[tuple[str, int], list[NoteVerifier]] = {}
    for v in verifiers:
        known.setdefault((v.name, v.key_hash), []).append(v)

    try:
        decoded = note.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedNoteError("malformed note: not UTF-8") from None
    if any(ord(c) < 0x20 and c != "\n" for c in decoded):
        raise MalformedNoteError("malformed note: control character")
    split = note.rfind(b"\n\n")
    if split < 0:
        raise MalformedNoteError("malformed note: no blank line before the signatures")
    text, sigs = note[: split + 1], note[split + 2 :]
    if not sigs or not sigs.endswith(b"\n"):
        raise MalformedNoteError("malformed note: signature block missing or not newline-terminated")

    lines = sigs.decode("utf-8").split("\n")[:-1]
    if len(lines) > MAX_SIGNATURES:
        raise MalformedNoteError(f"malformed note: more than {MAX_SIGNATURES} signatures")
    verified: list[str] = []
    for line in lines:
        if not line.startswith(SIG_PREFIX):
            raise MalformedNoteError(f"malformed note: not a signature line: {line[:80]!r}")
        name, _, b64 = line[len(SIG_PREFIX) :].partition(" ")
        blob = _b64decode(b64)
        if blob is None or not is_valid_name(name) or not b64 or len(blob) < 5:
            raise MalformedNoteError(f"malformed note: bad signature line: {line[:80]!r}")
        hash_ = int.from_bytes(blob[:4], "big")
        candidates = known.get((name, hash_))
        if candidates is None:
            continue  # unknown key: ignored, as the spec requires
        if len(candidates) > 1:
            raise CheckpointError(f"ambiguous key {name}+{hash_:08x}: given more than once")
        if not candidates[0].verify(text, blob[4:]):
            raise InvalidSignatureError(name, hash_)
        if name not in verified:
            verified.append(name)
    if not verified:
        raise UnverifiedNoteError("note has no verifiable signatures")
    return OpenedNote(text, tuple(verified))


@dataclass(frozen=True)
class Checkpoint:
    """A log's tree head: origin, tree size and RFC 6962 root hash."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.origin, str) or not self.origin or "\n" in self.origin:
            raise CheckpointError("checkpoint origin must be a non-empty single line")
        _check_text(self.origin, "checkpoint origin")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or not 0 <= self.size < 2**64:
            raise CheckpointError(f"checkpoint tree size must be an integer in [0, 2^64): {self.size!r}")
        if not isinstance(self.root, bytes) or len(self.root) != HASH_SIZE:
            raise CheckpointError(f"checkpoint root hash must be {HASH_SIZE} bytes")
        object.__setattr__(self, "extensions", tuple(self.extensions))
        for ext in self.extensions:
            if not isinstance(ext, str) or not ext or "\n" in ext:
                raise CheckpointError("checkpoint extension lines must be non-empty single lines")
            _check_text(ext, "checkpoint extension line")

    def body(self) -> bytes:
        """The note text: origin, size, base64 root, extensions, each ending in newline."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode(), *self.extensions]
        return "".join(line + "\n" for line in lines).encode()


def parse_checkpoint(text: bytes | str) -> Checkpoint:
    """Parse a checkpoint body strictly (the note text, not the signed note)."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise CheckpointError("checkpoint is not UTF-8") from None
    if not text.endswith("\n"):
        raise CheckpointError("checkpoint must end with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise CheckpointError("checkpoint needs origin, tree size and root hash lines")
    if any(not line for line in lines):
        raise CheckpointError("checkpoint has an empty line")
    origin, size, root64, *extensions = lines
    if not _DECIMAL.fullmatch(size):
        raise CheckpointError(f"checkpoint tree size is not a decimal without leading zeros: {size[:40]!r}")
    root = _b64decode(root64)
    if root is None or len(root) != HASH_SIZE or base64.b64encode(root).decode() != root64:
        raise CheckpointError(f"checkpoint root hash is not the base64 of {HASH_SIZE} bytes")
    if int(size) >= 2**64:
        raise CheckpointError("checkpoint tree size does not fit in 64 bits")
    return Checkpoint(origin, int(size), root, tuple(extensions))


def sign_checkpoint(checkpoint: Checkpoint, signers: Iterable[NoteSigner]) -> bytes:
    return sign_note(checkpoint.body(), signers)


def open_checkpoint(note: bytes, verifiers: Iterable[NoteVerifier]) -> tuple[Checkpoint, tuple[str, ...]]:
    """Verify a signed checkpoint and parse its body; returns it and the verified key names."""
    opened = open_note(note, verifiers)
    return parse_checkpoint(opened.text), opened.verified
