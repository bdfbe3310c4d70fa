"""The webhook signature, for senders and receivers alike.

    X-AECL-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>

The timestamp is signed with the body so a captured delivery cannot be
replayed later than the receiver's tolerance. A header may carry several
v1 values (a sender signing with an old and a new secret while they are
rotated); any one matching is enough.
"""

from __future__ import annotations

import hashlib
import hmac

SCHEME = "v1"
DEFAULT_TOLERANCE_S = 300.0


def _mac(secret: bytes, t: int, body: bytes) -> str:
    return hmac.new(secret, f"{t}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: bytes, body: bytes, t: int) -> str:
    """The X-AECL-Signature value for `body` sent at unix time `t`."""
    return f"t={t},{SCHEME}={_mac(secret, t, body)}"


def verify_signature(secret: bytes, header: str, body: bytes, *, now: float,
                     tolerance_s: float = DEFAULT_TOLERANCE_S) -> None:
    """Check an X-AECL-Signature header against the raw body as received.
    Returns None when it is valid; raises ValueError saying why not.
    Verify the exact bytes received, before parsing them as JSON."""
    t: int | None = None
    macs: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            raise ValueError(f"malformed signature header: {part.strip()[:40]!r} is not key=value")
        if key == "t":
            if t is not None:
                raise ValueError("malformed signature header: more than one timestamp")
            if not value.isascii() or not value.isdigit() or len(value) > 12:
                raise ValueError("malformed signature header: the timestamp is not unix seconds")
            t = int(value)
        elif key == SCHEME:
            macs.append(value.strip().lower())
        # Other schemes are ignored, so a receiver keeps working when one is added.
    if t is None:
        raise ValueError("malformed signature header: no timestamp (t=)")
    if not macs:
        raise ValueError(f"malformed signature header: no {SCHEME} signature")
    if abs(now - t) > tolerance_s:
        raise ValueError(f"timestamp {t} is {now - t:+.0f} s from now, outside the tolerance of "
                         f"{tolerance_s:g} s (a replay, or a clock out of sync)")
    expected = _mac(secret, t, body)
    # Compare every candidate (a list, not a short-circuit), each in constant time.
    if not any([hmac.compare_digest(expected.encode(), m.encode()) for m in macs]):  # noqa: C419
        raise ValueError("signature mismatch: the body was changed, or it was signed with another secret")


__all__ = ["DEFAULT_TOLERANCE_S", "sign", "verify_signature"]
