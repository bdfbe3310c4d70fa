"""Checkpoints (C2SP tlog-checkpoint) in signed notes (C2SP signed-note).

Three kinds of evidence: the vectors of Go's reference implementation
(golang.org/x/mod/sumdb/note, note_test.go), the examples in the C2SP specs,
and interop both ways with that implementation itself, built from Debian's
golang-golang-x-mod-dev by scripts/build-note-verifier.sh.
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from enforcer.audit.checkpoint import (
    Checkpoint,
    CheckpointError,
    InvalidSignatureError,
    MalformedNoteError,
    NoteSigner,
    NoteVerifier,
    UnverifiedNoteError,
    key_hash,
    open_checkpoint,
    open_note,
    parse_checkpoint,
    parse_signer_key,
    parse_verifier_key,
    sign_checkpoint,
    sign_note,
)
from enforcer.audit.keys import load_public_key, load_signing_key
from enforcer.errors import AuditError

REPO = Path(__file__).resolve().parents[2]

# --- Vectors from golang.org/x/mod/sumdb/note (note.go docs, note_test.go) ---
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
).encode()
PETER_SIG = (
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
).encode()
ENOCH_SIG = (
    "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n"
).encode()

# --- Example from c2sp.org/tlog-checkpoint (its key is not published) ---
C2SP_CHECKPOINT = (
    "example.com/behind-the-sofa\n"
    "20852163\n"
    "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    "\n"
    "— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
).encode()


@pytest.fixture
def peter() -> NoteVerifier:
    return parse_verifier_key(PETER_VKEY)


@pytest.fixture
def enoch() -> NoteVerifier:
    return parse_verifier_key(ENOCH_VKEY)


def new_signer(name: str = "example.com/aecl") -> NoteSigner:
    return NoteSigner(name, Ed25519PrivateKey.generate())


def checkpoint(size: int = 7, extensions: tuple[str, ...] = ()) -> Checkpoint:
    return Checkpoint("example.com/aecl", size, hashlib.sha256(b"root").digest(), extensions)


# ---------------------------------------------------------------- key hashes


def test_key_hash_is_computed_as_the_spec_says(peter):
    raw = base64.b64decode(PETER_VKEY.split("+")[2])
    assert raw[0] == 0x01 and len(raw) == 33
    spec = hashlib.sha256(b"PeterNeumann" + b"\x0a" + b"\x01" + raw[1:]).digest()[:4]
    assert spec.hex() == "c74f20a3"
    assert key_hash("PeterNeumann", raw[1:]) == 0xC74F20A3 == peter.key_hash
    assert peter.name == "PeterNeumann"


@pytest.mark.parametrize("vkey", [PETER_VKEY, ENOCH_VKEY])
def test_verifier_key_string_round_trips(vkey):
    assert parse_verifier_key(vkey).verifier_key_string() == vkey


def test_go_signer_key_gives_go_public_key_and_go_signature():
    signer = parse_signer_key(PETER_SKEY)
    assert signer.key_hash == 0xC74F20A3
    assert signer.verifier().verifier_key_string() == PETER_VKEY
    assert signer.signer_key_string() == PETER_SKEY
    # Ed25519 is deterministic: byte-for-byte the note Go's TestSign expects.
    assert sign_note(TEXT, [signer]) == TEXT + b"\n" + PETER_SIG


def _manglings(key: str):
    b = key.encode()
    for i in range(len(b) + 1):
        for j in range(i + 1, len(b) + 1):
            if i != 0 or j != len(b):
                yield b[i:j].decode("latin-1")
    for i in range(len(b)):
        yield (b[:i] + bytes([b[i] + 1]) + b[i + 1 :]).decode("latin-1")


def test_every_mangled_verifier_key_is_rejected():
    # As Go's TestNewVerifier: every proper substring and every one-byte change.
    bad = list(_manglings(PETER_VKEY)) + [
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",  # wrong length
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # unknown algorithm
    ]
    for key in bad:
        with pytest.raises(CheckpointError):
            parse_verifier_key(key)


def test_every_mangled_signer_key_is_rejected():
    for key in _manglings(PETER_SKEY):
        with pytest.raises(CheckpointError):
            parse_signer_key(key)


@pytest.mark.parametrize("name", ["", "a b", "a+b", "a\tb", "a\u00a0b", "a\u2003b", "a\u3000b", "a\x01b"])
def test_invalid_key_names_are_refused(name):
    with pytest.raises(CheckpointError):
        new_signer(name)


# ---------------------------------------------------------------- open_note, Go's TestOpen


def test_one_known_one_unknown_signature(peter):
    opened = open_note(TEXT + b"\n" + PETER_SIG + ENOCH_SIG, [peter])
    assert opened.text == TEXT
    assert opened.verified == ("PeterNeumann",)


def test_both_signatures_verified(peter, enoch):
    text, names = open_note(TEXT + b"\n" + PETER_SIG + ENOCH_SIG, [peter, enoch])
    assert (text, names) == (TEXT, ("PeterNeumann", "EnochRoot"))


def test_only_unknown_keys_is_rejected(enoch):
    with pytest.raises(UnverifiedNoteError):
        open_note(TEXT + b"\n" + PETER_SIG + ENOCH_SIG, [])
    with pytest.raises(UnverifiedNoteError):
        open_note(TEXT + b"\n" + PETER_SIG, [enoch])


def test_duplicated_verifier_is_ambiguous_only_when_used(peter, enoch):
    with pytest.raises(CheckpointError, match="ambiguous"):
        open_note(TEXT + b"\n" + ENOCH_SIG, [enoch, peter, enoch])
    assert open_note(TEXT + b"\n" + PETER_SIG, [enoch, peter, enoch]).verified == ("PeterNeumann",)


def test_signature_count_limit(peter):
    assert open_note(TEXT + b"\n" + PETER_SIG * 100, [peter]).verified == ("PeterNeumann",)
    for known in ([peter], []):
        with pytest.raises(MalformedNoteError):
            open_note(TEXT + b"\n" + PETER_SIG * 101, known)


def test_corrupted_signature_from_known_key(peter):
    # Go's vector: "ABCD" spliced into the signature line at byte 60.
    bad = PETER_SIG[:60] + b"ABCD" + PETER_SIG[60:]
    with pytest.raises(InvalidSignatureError, match=r"PeterNeumann\+c74f20a3"):
        open_note(TEXT + b"\n" + bad, [peter])


def test_corrupted_signature_from_unknown_key_is_ignored(peter):
    bad_enoch = ENOCH_SIG[:60] + b"ABCD" + ENOCH_SIG[60:]
    note = TEXT + b"\n" + PETER_SIG + ENOCH_SIG + bad_enoch
    assert open_note(note, [peter]).verified == ("PeterNeumann",)


@pytest.mark.parametrize(
    "note",
    [
        TEXT,  # no signatures
        TEXT + b"\n",  # blank line, no signatures
        TEXT + b"\n" + PETER_SIG[:-1],  # no trailing newline
        b"\x01" + TEXT + b"\n" + PETER_SIG,  # control character
        b"\xff" + TEXT + b"\n" + PETER_SIG,  # not UTF-8
        TEXT + b"\n" + PETER_SIG.replace(b"PeterNeumann", b"Bad Name")[:-1],
        TEXT + b"\n" + PETER_SIG + b"Unexpected line.\n",
    ],
    ids=["text-only", "blank-only", "no-final-newline", "control", "not-utf8", "bad-name", "stray-line"],
)
def test_go_malformed_notes(peter, note):
    with pytest.raises(MalformedNoteError):
        open_note(note, [peter])


# ---------------------------------------------------------------- our own signing


def test_round_trip_with_two_signers():
    a, b = new_signer("log.example/a"), new_signer("log.example/b")
    note = sign_checkpoint(checkpoint(), [a, b])
    assert note.startswith(checkpoint().body() + "\n\u2014 log.example/a ".encode())
    cp, names = open_checkpoint(note, [a.verifier(), b.verifier()])
    assert cp == checkpoint() and names == ("log.example/a", "log.example/b")
    assert open_checkpoint(note, [b.verifier()])[1] == ("log.example/b",)


def test_signing_with_project_pem_keys(keypair):
    private, public = keypair
    signer = NoteSigner("example.com/aecl", load_signing_key(private))
    verifier = NoteVerifier("example.com/aecl", load_public_key(public))
    assert verifier.key_hash == signer.key_hash
    note = sign_checkpoint(checkpoint(), [signer])
    assert open_checkpoint(note, [parse_verifier_key(verifier.verifier_key_string())])[0] == checkpoint()


def test_tampered_text_is_rejected():
    s = new_signer()
    note = sign_checkpoint(checkpoint(7), [s])
    with pytest.raises(InvalidSignatureError):
        open_note(note.replace(b"\n7\n", b"\n8\n", 1), [s.verifier()])


def test_tampered_signature_is_rejected():
    s = new_signer()
    note = sign_checkpoint(checkpoint(), [s])
    line = note.rsplit(b" ", 1)[1]
    raw = bytearray(base64.b64decode(line))
    raw[-1] ^= 1
    tampered = note[: -len(line)] + base64.b64encode(bytes(raw)) + b"\n"
    with pytest.raises(InvalidSignatureError):
        open_note(tampered, [s.verifier()])


def test_wrong_key_is_rejected():
    s, other = new_signer(), new_signer()  # same name, different key: another key ID
    note = sign_checkpoint(checkpoint(), [s])
    with pytest.raises(UnverifiedNoteError):
        open_note(note, [other.verifier()])


def test_signature_claiming_a_known_key_id_is_checked():
    s, forger = new_signer(), new_signer()
    body = checkpoint().body()
    blob = s.key_hash.to_bytes(4, "big") + forger.sign(body)
    note = body + b"\n" + f"— {s.name} ".encode() + base64.b64encode(blob) + b"\n"
    with pytest.raises(InvalidSignatureError):
        open_note(note, [s.verifier()])


def test_repeated_signature_from_known_key_is_still_verified():
    # Go skips a known key's repeated signatures unchecked; the spec says MUST verify.
    s = new_signer()
    note = sign_checkpoint(checkpoint(), [s])
    sig = note[len(checkpoint().body()) + 1 :]
    raw = bytearray(base64.b64decode(sig.rsplit(b" ", 1)[1]))
    raw[-1] ^= 1
    bad = sig.rsplit(b" ", 1)[0] + b" " + base64.b64encode(bytes(raw)) + b"\n"
    with pytest.raises(InvalidSignatureError):
        open_note(note + bad, [s.verifier()])


@pytest.mark.parametrize(
    "mangle",
    [
        lambda n: n.replace(b"\n\n", b"\n", 1),  # missing blank line
        lambda n: n[:-1],  # no trailing newline
        lambda n: n[:-3] + b"!=\n",  # bad base64
        lambda n: n[:-2] + b"\n",  # base64 without its padding
        lambda n: n.replace("—".encode(), b"-"),  # hyphen instead of em dash
        lambda n: n.replace("— ".encode(), "—".encode()),  # no space after the dash
        lambda n: n.replace(b"/aecl ", b"/aecl"),  # no space after the name
        lambda n: n + "— example.com/aecl AAAAAA==\n".encode(),  # 4 bytes: key ID, no signature
        lambda n: n + "— example.com/aecl \n".encode(),  # empty signature
        lambda n: n.replace(b"\n7\n", b"\n7\r\n"),  # CR
    ],
    ids=["no-blank", "no-newline", "bad-b64", "no-padding", "hyphen", "no-dash-space", "no-name-space",
         "short-sig", "empty-sig", "cr"],
)
def test_malformed_notes_are_rejected(mangle):
    s = new_signer()
    note = sign_checkpoint(checkpoint(7), [s])
    with pytest.raises(MalformedNoteError):
        open_note(mangle(note), [s.verifier()])


def test_too_many_signatures_are_rejected():
    signers = [new_signer(f"w{i}") for i in range(101)]
    note = sign_note(checkpoint().body(), signers)
    with pytest.raises(MalformedNoteError):
        open_note(note, [signers[0].verifier()])
    assert open_note(sign_note(checkpoint().body(), signers[:100]), [signers[99].verifier()]).verified == ("w99",)


def test_errors_are_audit_errors():
    assert issubclass(CheckpointError, AuditError)
    for cls in (MalformedNoteError, UnverifiedNoteError, InvalidSignatureError):
        assert issubclass(cls, CheckpointError)


@pytest.mark.parametrize("text", [b"no newline", b"a\x00b\n", b"\xff\n"])
def test_sign_note_refuses_unsignable_text(text):
    with pytest.raises(CheckpointError):
        sign_note(text, [new_signer()])


def test_sign_note_needs_a_signer_and_distinct_keys():
    s = new_signer()
    with pytest.raises(CheckpointError):
        sign_note(b"x\n", [])
    with pytest.raises(CheckpointError):
        sign_note(b"x\n", [s, s])


# ---------------------------------------------------------------- checkpoint bodies


def test_c2sp_example_checkpoint_parses():
    body, _, _ = C2SP_CHECKPOINT.partition(b"\n\n")
    cp = parse_checkpoint(body + b"\n")
    assert (cp.origin, cp.size, cp.extensions) == ("example.com/behind-the-sofa", 20852163, ())
    assert cp.body() == body + b"\n"
    with pytest.raises(UnverifiedNoteError):  # well-formed, but its key is not published
        open_note(C2SP_CHECKPOINT, [new_signer("example.com/behind-the-sofa").verifier()])


def test_checkpoint_body_and_round_trip():
    cp = checkpoint(0, ("ext one", "— ext two"))
    root64 = base64.b64encode(cp.root).decode()
    assert cp.body() == f"example.com/aecl\n0\n{root64}\next one\n— ext two\n".encode()
    assert parse_checkpoint(cp.body()) == cp
    assert parse_checkpoint(cp.body().decode()) == cp
    assert parse_checkpoint(checkpoint(2**64 - 1).body()).size == 2**64 - 1


ROOT64 = base64.b64encode(hashlib.sha256(b"root").digest()).decode()


@pytest.mark.parametrize(
    "body",
    [
        f"o\n01\n{ROOT64}\n",  # leading zero
        f"o\n00\n{ROOT64}\n",
        f"o\n-1\n{ROOT64}\n",
        f"o\n+1\n{ROOT64}\n",
        f"o\n 1\n{ROOT64}\n",
        f"o\n1_000\n{ROOT64}\n",
        f"o\n\u0661\n{ROOT64}\n",  # Arabic-Indic digit one
        f"o\n{2**64}\n{ROOT64}\n",  # does not fit in 64 bits
        f"o\n\n{ROOT64}\n",  # empty size
        f"\n1\n{ROOT64}\n",  # empty origin
        f"o\n1\n{ROOT64}",  # no final newline
        "o\n1\n",  # no root
        f"o\n1\n{ROOT64[:-1]}\n",  # padding missing
        f"o\n1\n{base64.b64encode(bytes(31)).decode()}\n",  # 31 bytes
        f"o\n1\n{base64.b64encode(bytes(33)).decode()}\n",  # 33 bytes
        f"o\n1\n{base64.b64encode(bytes(32)).decode()[:-2]}B=\n",  # non-canonical trailing bits
        f"o\n1\n{ROOT64}\n\n",  # empty extension line
        f"o\n1\n{ROOT64}\next\n\n",
        f"o\x01\n1\n{ROOT64}\n",  # control character
    ],
)
def test_malformed_checkpoints_are_rejected(body):
    with pytest.raises(CheckpointError):
        parse_checkpoint(body.encode())


@pytest.mark.parametrize(
    "args",
    [("", 1, bytes(32)), ("a\nb", 1, bytes(32)), ("o", -1, bytes(32)), ("o", 2**64, bytes(32)),
     ("o", True, bytes(32)), ("o", 1, bytes(31)), ("o", 1, bytes(32), ("",)), ("o", 1, bytes(32), ("a\nb",))],
)
def test_invalid_checkpoints_cannot_be_built(args):
    with pytest.raises(CheckpointError):
        Checkpoint(*args)


# ---------------------------------------------------------------- interop with Go's note package


@pytest.fixture(scope="module")
def note_verify() -> str:
    """The Go program of tests/audit/note_verify, built (or reused) by its script."""
    proc = subprocess.run(
        [str(REPO / "scripts/build-note-verifier.sh")], capture_output=True, text=True, timeout=900
    )
    if proc.returncode != 0:
        pytest.fail(f"scripts/build-note-verifier.sh failed:\n{proc.stderr[-3000:]}")
    return proc.stdout.strip().splitlines()[-1]


def go(binary: str, *args: str, ok: bool = True) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run([binary, *args], capture_output=True, timeout=60)
    if ok:
        assert proc.returncode == 0, proc.stderr.decode()
    return proc


def test_go_verifies_python_signed_checkpoints(note_verify, tmp_path):
    a, b = new_signer("example.com/aecl"), new_signer("witness.example/w1")
    cp = checkpoint(12345, ("an extension",))
    note = tmp_path / "cp.note"
    note.write_bytes(sign_checkpoint(cp, [a, b]))
    for s in (a, b):
        out = go(note_verify, "verify", s.verifier().verifier_key_string(), str(note))
        assert out.stdout == cp.body()
    # And Go's verifier is not a rubber stamp: it rejects what Python rejects.
    note.write_bytes(note.read_bytes().replace(b"\n12345\n", b"\n12346\n"))
    bad = go(note_verify, "verify", a.verifier().verifier_key_string(), str(note), ok=False)
    assert bad.returncode == 1 and b"invalid signature" in bad.stderr
    note.write_bytes(sign_checkpoint(cp, [b]))
    bad = go(note_verify, "verify", a.verifier().verifier_key_string(), str(note), ok=False)
    assert bad.returncode == 1 and b"no verifiable signatures" in bad.stderr


def test_go_verifies_a_note_signed_with_a_project_pem_key(note_verify, keypair, tmp_path):
    signer = NoteSigner("example.com/aecl", load_signing_key(keypair[0]))
    vkey = NoteVerifier("example.com/aecl", load_public_key(keypair[1])).verifier_key_string()
    (tmp_path / "n").write_bytes(sign_checkpoint(checkpoint(), [signer]))
    assert go(note_verify, "verify", vkey, str(tmp_path / "n")).stdout == checkpoint().body()


def test_python_verifies_go_signed_checkpoints(note_verify, tmp_path):
    cp = checkpoint(99, ("x",))
    (tmp_path / "body").write_bytes(cp.body())
    out = go(note_verify, "sign", "example.com/go-log", str(tmp_path / "body")).stdout
    vkey, note = out.split(b"\n", 1)
    verifier = parse_verifier_key(vkey.decode())
    assert open_checkpoint(note, [verifier]) == (cp, ("example.com/go-log",))
    with pytest.raises(InvalidSignatureError):
        open_checkpoint(note.replace(b"\n99\n", b"\n98\n"), [verifier])


def test_go_and_python_sign_identically_with_one_key(note_verify, tmp_path):
    signer = new_signer("example.com/aecl")
    (tmp_path / "body").write_bytes(checkpoint().body())
    go_note = go(note_verify, "sign-key", signer.signer_key_string(), str(tmp_path / "body")).stdout
    assert go_note == sign_checkpoint(checkpoint(), [signer])


def test_go_selftest_and_vector(note_verify, tmp_path):
    assert go(note_verify, "selftest").stdout == b"ok\n"
    (tmp_path / "n").write_bytes(TEXT + b"\n" + PETER_SIG + ENOCH_SIG)
    assert go(note_verify, "verify", ENOCH_VKEY, str(tmp_path / "n")).stdout == TEXT
