"""Development certificates and peer identity, over a real mTLS gRPC connection."""

from __future__ import annotations

import argparse
import ipaddress
import stat
from concurrent import futures

import grpc
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from enforcer.errors import ConfigError, Unauthenticated
from enforcer.identity.certs import add_certs_parser, make_dev_certs, peer_certificate

METHOD = "/aecl.test.Whoami/Ask"


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    out = tmp_path_factory.mktemp("certs") / "dev"
    return make_dev_certs(out, agents=["finance_agent_v2", "ops_agent"], approvers=["alice"], admins=["root"])


def load(path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_files_and_modes(certs):
    assert mode(certs.out) == 0o700
    names = sorted(p.name for p in certs.out.iterdir())
    assert names == sorted(["ca.pem", "ca.key", "server.pem", "server.key",
                            "agent-finance_agent_v2.pem", "agent-finance_agent_v2.key",
                            "agent-ops_agent.pem", "agent-ops_agent.key",
                            "approver-alice.pem", "approver-alice.key", "admin-root.pem", "admin-root.key"])
    for path in certs.files:
        assert mode(path) == (0o600 if path.suffix == ".key" else 0o644), path
    assert [c.uri for c in certs.clients] == [
        "spiffe://aecl.dev/agent/finance_agent_v2", "spiffe://aecl.dev/agent/ops_agent",
        "spiffe://aecl.dev/approver/alice", "spiffe://aecl.dev/admin/root"]


def test_sans_usages_and_chain(certs):
    ca = load(certs.ca_cert)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    server = load(certs.server_cert)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert set(san.get_values_for_type(x509.IPAddress)) == {ipaddress.ip_address("127.0.0.1"),
                                                            ipaddress.ip_address("::1")}
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    for c in certs.clients:
        cert = load(c.cert)
        cert.verify_directly_issued_by(ca)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.UniformResourceIdentifier) == [c.uri]
        assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
            ExtendedKeyUsageOID.CLIENT_AUTH]
        assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
        assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_refuses_to_overwrite_unless_forced(tmp_path):
    out = tmp_path / "c"
    first = make_dev_certs(out, agents=["a"])
    before = first.ca_cert.read_bytes()
    (out / "server.key").unlink()  # one missing, the others present: still refused, nothing written
    with pytest.raises(ConfigError, match="ca.pem"):
        make_dev_certs(out, agents=["a"])
    assert first.ca_cert.read_bytes() == before and not (out / "server.key").exists()
    first.ca_key.chmod(0o644)
    again = make_dev_certs(out, agents=["a"], force=True)
    assert again.ca_cert.read_bytes() != before
    assert mode(again.ca_key) == 0o600


@pytest.mark.parametrize("kw", [{"agents": ["../x"]}, {"agents": ["a", "a"]}, {"agents": ["a"], "hosts": []},
                                {"agents": ["a"], "trust_domain": "Bad Domain"}, {"agents": ["a"], "days": 0}])
def test_bad_arguments(tmp_path, kw):
    with pytest.raises(ValueError):
        make_dev_certs(tmp_path / "c", **kw)
    assert not (tmp_path / "c").exists()


def test_peer_certificate_fields(certs):
    pem = certs.clients[0].cert.read_bytes()
    peer = peer_certificate({"x509_pem_cert": [pem], "transport_security_type": [b"ssl"]})
    cert = load(certs.clients[0].cert)
    assert peer.uri_sans == ("spiffe://aecl.dev/agent/finance_agent_v2",)
    assert peer.subject == cert.subject.rfc4514_string() and "CN=finance_agent_v2" in peer.subject
    assert peer.fingerprint.startswith("sha256:") and len(peer.fingerprint) == 7 + 64
    assert peer.not_before < peer.not_after == cert.not_valid_after_utc.timestamp()


def test_no_certificate_is_none():
    assert peer_certificate({}) is None
    assert peer_certificate({"transport_security_type": [b"ssl"]}) is None
    assert peer_certificate({"x509_pem_cert": []}) is None


@pytest.mark.parametrize("pem", [b"garbage", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"])
def test_unparseable_certificate_is_unauthenticated(pem):
    with pytest.raises(Unauthenticated) as e:
        peer_certificate({"x509_pem_cert": [pem]})
    assert e.value.reason == "malformed_certificate"


def _whoami(request: bytes, context: grpc.ServicerContext) -> bytes:
    peer = peer_certificate(context.auth_context())
    return b"none" if peer is None else "\n".join(peer.uri_sans).encode()


@pytest.fixture(scope="module")
def server(certs):
    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    handler = grpc.method_handlers_generic_handler(
        "aecl.test.Whoami", {"Ask": grpc.unary_unary_rpc_method_handler(_whoami)})
    srv.add_generic_rpc_handlers((handler,))
    creds = grpc.ssl_server_credentials(
        [(certs.server_key.read_bytes(), certs.server_cert.read_bytes())],
        root_certificates=certs.ca_cert.read_bytes(), require_client_auth=True)
    port = srv.add_secure_port("127.0.0.1:0", creds)
    srv.start()
    yield f"127.0.0.1:{port}"
    srv.stop(None)


def _call(target: str, creds: grpc.ChannelCredentials) -> bytes:
    with grpc.secure_channel(target, creds) as channel:
        return channel.unary_unary(METHOD)(b"", timeout=10)


@pytest.mark.parametrize("index", [0, 2, 3])
def test_mtls_client_gets_its_uri(certs, server, index):
    client = certs.clients[index]
    creds = grpc.ssl_channel_credentials(root_certificates=certs.ca_cert.read_bytes(),
                                         private_key=client.key.read_bytes(),
                                         certificate_chain=client.cert.read_bytes())
    assert _call(server, creds).decode() == client.uri


def test_client_without_certificate_is_refused(certs, server):
    creds = grpc.ssl_channel_credentials(root_certificates=certs.ca_cert.read_bytes())
    with pytest.raises(grpc.RpcError) as e:
        _call(server, creds)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE


def test_client_with_certificate_of_another_ca_is_refused(certs, server, tmp_path):
    rogue = make_dev_certs(tmp_path / "rogue", agents=["finance_agent_v2"])
    creds = grpc.ssl_channel_credentials(root_certificates=certs.ca_cert.read_bytes(),
                                         private_key=rogue.clients[0].key.read_bytes(),
                                         certificate_chain=rogue.clients[0].cert.read_bytes())
    with pytest.raises(grpc.RpcError) as e:
        _call(server, creds)
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE


def test_cli_writes_and_prints_config(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="aecl")
    add_certs_parser(parser.add_subparsers(dest="command", required=True))
    out = tmp_path / "cli"
    args = parser.parse_args(["certs", "dev", "--out", str(out), "--agent", "a1", "--approver", "alice",
                              "--host", "aecl.internal", "--trust-domain", "example.org", "--days", "2"])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out / 'agent-a1.key'}" in printed
    snippet = printed.split("\n\n", 1)[1]
    docs = [yaml.safe_load(part) for part in snippet.split("\n\n") if part.strip()]
    assert docs[0]["tls"] == {"cert": str(out / "server.pem"), "key": str(out / "server.key"),
                              "client_ca": str(out / "ca.pem")}
    assert docs[0]["identity"]["approvers"] == [{"id": "alice",
                                                 "certificate": {"uri_san": "spiffe://example.org/approver/alice"}}]
    assert docs[1] == {"credentials": {"certificate": {"uri_san": "spiffe://example.org/agent/a1"}}}
    server = load(out / "server.pem")
    assert server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName) == ["aecl.internal"]
    with pytest.raises(ConfigError, match="already exists"):
        args.func(args)


def test_cli_defaults_and_help(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="aecl")
    add_certs_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["certs", "dev", "--out", str(tmp_path / "d")])
    assert args.func(args) == 0
    assert sorted(p.name for p in (tmp_path / "d").glob("*-*.pem")) == [
        "admin-admin.pem", "agent-finance_agent_v2.pem", "approver-approver.pem"]
    capsys.readouterr()
    with pytest.raises(SystemExit):
        parser.parse_args(["certs", "dev", "--help"])
    help_text = capsys.readouterr().out
    for flag in ("--out", "--agent", "--approver", "--admin", "--host", "--trust-domain", "--days", "--force"):
        assert flag in help_text
    assert "finance_agent_v2" in help_text
