"""Signed, hash-chained, append-only audit log (writer, format and verifier)."""
