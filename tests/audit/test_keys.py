from __future__ import annotations

import os
import stat

import pytest

from enforcer.audit.keys import generate_keypair, key_id, load_public_key, load_signing_key
from enforcer.errors import SigningKeyError


def test_private_key_is_created_0600(keypair):
    priv, pub = keypair
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    assert key_id(load_signing_key(priv).public_key()) == key_id(load_public_key(pub))


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_key_readable_by_others_is_refused(keypair, mode):
    priv, _ = keypair
    os.chmod(priv, mode)
    with pytest.raises(SigningKeyError, match="chmod 600"):
        load_signing_key(priv)


def test_keygen_never_overwrites(keypair):
    with pytest.raises(SigningKeyError, match="already exists"):
        generate_keypair(keypair[0].parent)


def test_missing_key_names_the_fix(tmp_path):
    with pytest.raises(SigningKeyError, match="aecl keygen"):
        load_signing_key(tmp_path / "nope.key")
