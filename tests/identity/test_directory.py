"""The directory of who holds which credential: built from real manifests,
real config principals and real hash files on disk, with real key hashing."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enforcer.errors import ConfigError, Unauthenticated
from enforcer.identity.apikeys import (
    KeyHash,
    generate_key,
    hash_file_path,
    write_hash_file,
)
from enforcer.identity.directory import Credential, Directory, build_directory
from enforcer.identity.models import (
    AgentCredentials,
    ApiKeyEntry,
    CertificateIdentity,
    HumanPrincipal,
)
from enforcer.manifests import AgentManifest

NOW = 1_796_166_000.0  # 2026-12-01T23:00:00Z


def entry(h: KeyHash) -> ApiKeyEntry:
    return ApiKeyEntry(key_id=h.key_id, sha256=h.sha256, created_at=h.created_at)


def manifest(agent_id: str, *keys: KeyHash, cert: CertificateIdentity | None = None) -> AgentManifest:
    return AgentManifest(agent_id=agent_id,
                         credentials=AgentCredentials(api_keys=[entry(k) for k in keys], certificate=cert))


def person(pid: str, *keys: KeyHash, cert: CertificateIdentity | None = None,
           agent_ids: tuple[str, ...] = ()) -> HumanPrincipal:
    return HumanPrincipal(id=pid, api_keys=[entry(k) for k in keys], certificate=cert, agent_ids=list(agent_ids))


def uri(kind: str, pid: str) -> CertificateIdentity:
    return CertificateIdentity(uri_san=f"spiffe://aecl.dev/{kind}/{pid}")


@pytest.fixture
def world(tmp_path: Path):
    """Two agents (one with an inline key and a hash-file key, one with a
    hash-file key only), an approver and an admin from the config."""
    keys = {name: generate_key(NOW) for name in ("a_inline", "a_file", "b_file", "approver", "admin")}
    creds = tmp_path / "credentials"
    write_hash_file(hash_file_path(creds, "agent", "agent_a"), "agent", "agent_a", [keys["a_file"][1]])
    write_hash_file(hash_file_path(creds, "agent", "agent_b"), "agent", "agent_b", [keys["b_file"][1]])
    agents = {"agent_a": manifest("agent_a", keys["a_inline"][1], cert=uri("agent", "agent_a")),
              "agent_b": manifest("agent_b", cert=CertificateIdentity(subject="CN=agent_b,O=Example"))}
    approvers = [person("alice", keys["approver"][1], agent_ids=("agent_b",))]
    admins = [person("root", keys["admin"][1], cert=uri("admin", "root"))]
    directory = build_directory(agents, approvers, admins, creds)
    return directory, keys, (agents, approvers, admins, creds)


# -- keys ------------------------------------------------------------------------


@pytest.mark.parametrize("name,kind,owner", [
    ("a_inline", "agent", "agent_a"),  # manifest credentials.api_keys
    ("a_file", "agent", "agent_a"),  # credentials_dir/hashes/agent.agent_a.yaml
    ("b_file", "agent", "agent_b"),  # a hash file, nothing inline
    ("approver", "approver", "alice"),  # config identity.approvers
    ("admin", "admin", "root"),  # config identity.admins
])
def test_check_key_returns_the_owner_from_every_source(world, name, kind, owner):
    directory, keys, _ = world
    text, h = keys[name]
    cred = directory.check_key(text)
    assert cred == Credential(kind, owner, h)
    assert directory.has_credentials(kind, owner)


def test_an_unknown_key_is_unknown_key_and_names_only_the_key_id(world):
    directory, _, _ = world
    stranger, h = generate_key(NOW)
    with pytest.raises(Unauthenticated) as e:
        directory.check_key(stranger)
    assert e.value.reason == "unknown_key"
    assert h.key_id in str(e.value) and stranger.split("_", 2)[2] not in str(e.value)


def test_a_known_key_id_with_the_wrong_secret_is_bad_credential(world):
    directory, keys, _ = world
    _, h = keys["admin"]
    other_secret = generate_key(NOW)[0].split("_", 2)[2]
    with pytest.raises(Unauthenticated) as e:
        directory.check_key(f"aecl_{h.key_id}_{other_secret}")
    assert e.value.reason == "bad_credential"


def test_a_hash_file_of_a_principal_not_listed_is_not_read(tmp_path):
    """Only principals with a manifest or a config entry are looked up: a
    stray hash file proves nothing."""
    text, h = generate_key(NOW)
    creds = tmp_path / "credentials"
    write_hash_file(hash_file_path(creds, "agent", "ghost"), "agent", "ghost", [h])
    directory = build_directory({"agent_a": manifest("agent_a")}, [], [], creds)
    with pytest.raises(Unauthenticated) as e:
        directory.check_key(text)
    assert e.value.reason == "unknown_key"
    assert not directory.has_credentials("agent", "ghost")


def test_a_hash_file_copied_under_another_principal_is_refused(tmp_path):
    _, h = generate_key(NOW)
    creds = tmp_path / "credentials"
    write_hash_file(hash_file_path(creds, "agent", "agent_b"), "agent", "agent_b", [h])
    # agent_b's file, renamed to agent_a's
    hash_file_path(creds, "agent", "agent_b").rename(hash_file_path(creds, "agent", "agent_a"))
    with pytest.raises(ConfigError, match="agent.agent_a.yaml"):
        build_directory({"agent_a": manifest("agent_a")}, [], [], creds)


def test_no_credentials_dir_means_inline_keys_only(world):
    _, keys, (agents, approvers, admins, _) = world
    directory = build_directory(agents, approvers, admins, None)
    assert directory.check_key(keys["a_inline"][0]).principal_id == "agent_a"
    with pytest.raises(Unauthenticated):
        directory.check_key(keys["a_file"][0])
    assert not directory.has_credentials("agent", "nobody")


# -- certificates ------------------------------------------------------------------


def test_certificate_lookup_by_uri_san(world):
    directory, _, _ = world
    assert directory.by_certificate(("spiffe://aecl.dev/agent/agent_a",), "CN=whatever") == ("agent", "agent_a")
    assert directory.by_certificate(("spiffe://x/other", "spiffe://aecl.dev/admin/root"), "") == ("admin", "root")


def test_certificate_lookup_by_subject(world):
    directory, _, _ = world
    assert directory.by_certificate((), "CN=agent_b,O=Example") == ("agent", "agent_b")
    assert directory.by_certificate(("spiffe://aecl.dev/agent/nobody",), "CN=agent_b,O=Example") == \
        ("agent", "agent_b")


def test_a_certificate_naming_no_one_finds_no_one(world):
    directory, _, _ = world
    assert directory.by_certificate(("spiffe://aecl.dev/agent/agent_b",), "CN=agent_a,O=Example") is None
    assert directory.by_certificate((), "") is None
    # a URI SAN in the subject slot (or the reverse) is not a match
    assert directory.by_certificate((), "spiffe://aecl.dev/agent/agent_a") is None
    assert directory.by_certificate(("CN=agent_b,O=Example",), "") is None


def test_the_approvers_agents_are_recorded(world):
    directory, _, _ = world
    assert directory.approver_agents == {"alice": frozenset({"agent_b"})}


# -- one owner per credential ----------------------------------------------------------


def test_a_key_id_claimed_by_two_agents_is_a_config_error_naming_both(tmp_path):
    _, h = generate_key(NOW)
    with pytest.raises(ConfigError) as e:
        build_directory({"agent_a": manifest("agent_a", h), "agent_b": manifest("agent_b", h)}, [], [], None)
    message = str(e.value)
    assert h.key_id in message and "agent agent_a" in message and "agent agent_b" in message


def test_a_key_id_claimed_by_an_agent_file_and_an_admin_is_a_config_error(tmp_path):
    _, h = generate_key(NOW)
    creds = tmp_path / "credentials"
    write_hash_file(hash_file_path(creds, "agent", "agent_a"), "agent", "agent_a", [h])
    with pytest.raises(ConfigError) as e:
        build_directory({"agent_a": manifest("agent_a")}, [], [person("root", h)], creds)
    assert "agent agent_a" in str(e.value) and "admin root" in str(e.value)


def test_a_key_id_reused_with_another_hash_is_a_config_error(tmp_path):
    _, h = generate_key(NOW)
    _, other = generate_key(NOW)
    forged = KeyHash(h.key_id, other.sha256, h.created_at)
    with pytest.raises(ConfigError, match=h.key_id):
        build_directory({"agent_a": manifest("agent_a", h)}, [person("alice", forged)], [], None)


def test_the_same_key_inline_and_in_the_hash_file_of_its_owner_is_one_key(tmp_path):
    text, h = generate_key(NOW)
    creds = tmp_path / "credentials"
    write_hash_file(hash_file_path(creds, "agent", "agent_a"), "agent", "agent_a", [h])
    directory = build_directory({"agent_a": manifest("agent_a", h)}, [], [], creds)
    assert directory.check_key(text).principal_id == "agent_a" and len(directory.keys) == 1


def test_a_certificate_identity_named_by_two_principals_is_a_config_error_naming_both():
    cert = CertificateIdentity(subject="CN=shared,O=Example")
    with pytest.raises(ConfigError) as e:
        build_directory({"agent_a": manifest("agent_a", cert=cert)}, [person("alice", cert=cert)], [], None)
    assert "agent agent_a" in str(e.value) and "approver alice" in str(e.value)
    same_uri = uri("agent", "x")
    with pytest.raises(ConfigError) as e:
        build_directory({"agent_a": manifest("agent_a", cert=same_uri), "agent_b": manifest("agent_b", cert=same_uri)},
                        [], [], None)
    assert "agent agent_a" in str(e.value) and "agent agent_b" in str(e.value)


# -- digest ------------------------------------------------------------------------------


def test_digest_is_stable_for_the_same_input(world):
    directory, _, (agents, approvers, admins, creds) = world
    again = build_directory(dict(reversed(list(agents.items()))), approvers, admins, creds)
    assert again.digest == directory.digest and directory.digest.startswith("sha256:")
    assert again == directory


def test_digest_changes_when_a_key_is_added_to_a_hash_file(world):
    directory, keys, (agents, approvers, admins, creds) = world
    _, extra = generate_key(NOW)
    write_hash_file(hash_file_path(creds, "agent", "agent_b"), "agent", "agent_b", [keys["b_file"][1], extra])
    assert build_directory(agents, approvers, admins, creds).digest != directory.digest


def test_digest_changes_when_a_key_is_withdrawn_or_a_cert_or_link_changes(world):
    directory, keys, (agents, approvers, admins, creds) = world
    write_hash_file(hash_file_path(creds, "agent", "agent_a"), "agent", "agent_a", [])
    withdrawn = build_directory(agents, approvers, admins, creds)
    assert withdrawn.digest != directory.digest
    with pytest.raises(Unauthenticated):
        withdrawn.check_key(keys["a_file"][0])
    recert = {**agents, "agent_b": manifest("agent_b", cert=CertificateIdentity(subject="CN=agent_b,O=Other"))}
    assert build_directory(recert, approvers, admins, creds).digest != directory.digest
    relinked = [person("alice", keys["approver"][1])]
    assert build_directory(agents, relinked, admins, creds).digest != directory.digest


def test_the_empty_directory_knows_no_one():
    empty = Directory()
    with pytest.raises(Unauthenticated):
        empty.check_key(generate_key(NOW)[0])
    assert empty.by_certificate(("spiffe://aecl.dev/agent/a",), "CN=a") is None


@settings(max_examples=30, deadline=None)
@given(st.lists(st.sampled_from(["agent_a", "agent_b", "alice", "root"]), min_size=1, max_size=6))
def test_every_key_checks_out_to_its_own_owner_and_digests_follow_the_key_set(owners):
    """Property: whatever keys are handed to whom, each key text proves its
    owner, and adding one more key always changes the digest."""
    made = [(o, *generate_key(NOW)) for o in owners]

    def build(extra: list) -> Directory:
        rows = made + extra
        agents = {a: manifest(a, *[h for o, _, h in rows if o == a]) for a in ("agent_a", "agent_b")}
        return build_directory(agents, [person("alice", *[h for o, _, h in rows if o == "alice"])],
                               [person("root", *[h for o, _, h in rows if o == "root"])], None)
    directory = build([])
    for owner, text, _ in made:
        assert directory.check_key(text).principal_id == owner
    assert build([]).digest == directory.digest
    assert build([("root", *generate_key(NOW))]).digest != directory.digest
