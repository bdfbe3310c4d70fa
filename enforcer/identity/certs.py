"""Development certificates, and the identity a client certificate proves.

`aecl certs dev` makes a throwaway CA, a server certificate and one client
certificate per agent, approver and administrator, each client naming its
principal in a SPIFFE-style URI SAN (spiffe://<trust domain>/<kind>/<id>).
They are for development and tests: the CA key sits beside the certificates.

Keys are EC P-256: gRPC's TLS (BoringSSL) accepts them for both server and
client certificates, which it does not for Ed25519.

On a connection, gRPC has already verified the client's chain against the
configured client CA before any handler runs; `peer_certificate` only reads
what the verified certificate says.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import ipaddress
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from enforcer.errors import ConfigError, Unauthenticated
from enforcer.identity.apikeys import NAME_RE, make_private_dirs

# SPIFFE trust domains: lowercase letters, digits, '.', '-', '_'.
TRUST_DOMAIN_RE = re.compile(r"\A[a-z0-9._-]{1,255}\Z")
CLOCK_SKEW = dt.timedelta(minutes=5)
DEFAULT_AGENT = "finance_agent_v2"


@dataclass(frozen=True)
class ClientCert:
    """One client identity: whose it is, the URI SAN that names it, and its files."""

    kind: str  # agent | approver | admin
    principal_id: str
    uri: str
    cert: Path
    key: Path


@dataclass(frozen=True)
class DevCerts:
    out: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    clients: tuple[ClientCert, ...]

    @property
    def files(self) -> tuple[Path, ...]:
        """Every file written, CA first."""
        paths = [self.ca_cert, self.ca_key, self.server_cert, self.server_key]
        for c in self.clients:
            paths += [c.cert, c.key]
        return tuple(paths)


@dataclass(frozen=True)
class PeerCertificate:
    """What a verified client certificate says. Times in epoch seconds."""

    uri_sans: tuple[str, ...]
    subject: str  # RFC 4514
    fingerprint: str  # "sha256:" + hex of the DER
    not_before: float
    not_after: float


def spiffe_uri(trust_domain: str, kind: str, principal_id: str) -> str:
    return f"spiffe://{trust_domain}/{kind}/{principal_id}"


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _host_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _name(common_name: str, unit: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "AECL development"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


class _Ca:
    def __init__(self, now: dt.datetime, days: int) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.now, self.days = now, days
        name = _name("AECL development CA", "ca")
        public = self.key.public_key()
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(self.key, hashes.SHA256())
        )

    def issue(self, subject: x509.Name, sans: list[x509.GeneralName],
              usage: x509.ObjectIdentifier) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        key = ec.generate_private_key(ec.SECP256R1())
        public = key.public_key()
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(self.cert.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.now - CLOCK_SKEW).not_valid_after(self.now + dt.timedelta(days=self.days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return key, cert


def _write(path: Path, data: bytes, *, private: bool, force: bool) -> None:
    """Private keys are 0600 from creation on; certificates 0644."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    mode = 0o600 if private else 0o644
    fd = os.open(path, flags, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)  # an existing file overwritten with force keeps its old mode otherwise


def make_dev_certs(out: Path, *, agents: Sequence[str], approvers: Sequence[str] = ("approver",),
                   admins: Sequence[str] = ("admin",), hosts: Sequence[str] = ("localhost", "127.0.0.1", "::1"),
                   trust_domain: str = "aecl.dev", days: int = 30, force: bool = False) -> DevCerts:
    """Write a development CA, a server certificate for `hosts` and a client
    certificate per principal into `out` (created 0700). Refuses to overwrite
    any existing file (ConfigError naming it) unless `force`; nothing is
    written when it refuses."""
    if not hosts:
        raise ValueError("at least one host is needed for the server certificate")
    if days <= 0:
        raise ValueError("days must be positive")
    if not TRUST_DOMAIN_RE.match(trust_domain):
        raise ValueError(f"not a SPIFFE trust domain (lowercase letters, digits, '.', '-', '_'): {trust_domain!r}")
    principals = [("agent", a) for a in agents] + [("approver", a) for a in approvers] + [("admin", a) for a in admins]
    for kind, pid in principals:
        if not isinstance(pid, str) or not NAME_RE.fullmatch(pid):
            raise ValueError(f"not a valid {kind} id: {pid!r}")
    if len(set(principals)) != len(principals):
        raise ValueError("a principal is listed twice")

    clients = tuple(ClientCert(kind, pid, spiffe_uri(trust_domain, kind, pid),
                               out / f"{kind}-{pid}.pem", out / f"{kind}-{pid}.key") for kind, pid in principals)
    result = DevCerts(out=out, ca_cert=out / "ca.pem", ca_key=out / "ca.key", server_cert=out / "server.pem",
                      server_key=out / "server.key", clients=clients)
    if not force:
        for path in result.files:
            if path.exists():
                raise ConfigError(f"{path}: already exists; refusing to overwrite it (use --force to replace "
                                  "every development certificate)")
    make_private_dirs(out)

    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    ca = _Ca(now, days)
    _write(result.ca_key, _key_pem(ca.key), private=True, force=force)
    _write(result.ca_cert, _cert_pem(ca.cert), private=False, force=force)
    key, cert = ca.issue(_name(hosts[0], "server"), [_host_name(h) for h in hosts], ExtendedKeyUsageOID.SERVER_AUTH)
    _write(result.server_key, _key_pem(key), private=True, force=force)
    _write(result.server_cert, _cert_pem(cert), private=False, force=force)
    for c in clients:
        key, cert = ca.issue(_name(c.principal_id, c.kind), [x509.UniformResourceIdentifier(c.uri)],
                             ExtendedKeyUsageOID.CLIENT_AUTH)
        _write(c.key, _key_pem(key), private=True, force=force)
        _write(c.cert, _cert_pem(cert), private=False, force=force)
    return result


@functools.lru_cache(maxsize=1024)
def _parse_pem(pem: bytes) -> PeerCertificate:
    """Cached by the exact PEM: a long-lived client presents the same
    certificate on every call, and parsing is the costly part."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            uris = tuple(san.get_values_for_type(x509.UniformResourceIdentifier))
        except x509.ExtensionNotFound:
            uris = ()
        return PeerCertificate(
            uri_sans=uris,
            subject=cert.subject.rfc4514_string(),
            fingerprint="sha256:" + cert.fingerprint(hashes.SHA256()).hex(),
            not_before=cert.not_valid_before_utc.timestamp(),
            not_after=cert.not_valid_after_utc.timestamp(),
        )
    except ValueError:
        raise Unauthenticated("malformed_certificate", "the client certificate cannot be parsed") from None


def peer_certificate(auth_context: Mapping[str, Sequence[bytes]]) -> PeerCertificate | None:
    """The client certificate of a connection (grpc's
    `context.auth_context()`), or None when the client presented none.
    Unauthenticated("malformed_certificate") if it cannot be parsed."""
    pems = auth_context.get("x509_pem_cert")
    if not pems:
        return None
    return _parse_pem(bytes(pems[0]))


# --- `aecl certs dev` --------------------------------------------------------

CERTS_DEV_DESCRIPTION = (
    "Write a development CA, a server certificate and one client certificate per agent, approver and "
    "administrator into DIR (created mode 0700; private keys 0600). Each client certificate names its principal "
    "in a URI SAN, spiffe://TRUST_DOMAIN/<agent|approver|admin>/ID, which a manifest's or the config's "
    "`credentials: certificate: uri_san:` matches. Keys are EC P-256. For development and tests only: the CA key "
    "is written beside the certificates. Prints the files written and the config to use."
)


def add_certs_parser(sub: argparse._SubParsersAction) -> None:
    """`aecl certs dev ...` (the lead wires this into enforcer/cli.py)."""
    c = sub.add_parser("certs", help="TLS certificates for the gRPC port",
                       description="TLS certificates for the gRPC port.")
    csub = c.add_subparsers(dest="certs_command", required=True, metavar="COMMAND")
    d = csub.add_parser("dev", help="make a development CA, server and client certificates",
                        description=CERTS_DEV_DESCRIPTION)
    d.add_argument("--out", required=True, metavar="DIR", help="directory for the certificates and keys")
    d.add_argument("--agent", action="append", metavar="ID",
                   help=f"an agent to make a client certificate for (repeatable; default {DEFAULT_AGENT})")
    d.add_argument("--approver", action="append", metavar="ID",
                   help="an approver to make a client certificate for (repeatable; default approver)")
    d.add_argument("--admin", action="append", metavar="ID",
                   help="an administrator to make a client certificate for (repeatable; default admin)")
    d.add_argument("--host", action="append", metavar="NAME",
                   help="a DNS name or IP address the server certificate is valid for (repeatable; default "
                        "localhost, 127.0.0.1 and ::1)")
    d.add_argument("--trust-domain", default="aecl.dev", metavar="TD",
                   help="the SPIFFE trust domain of the client URIs (default aecl.dev)")
    d.add_argument("--days", type=int, default=30, metavar="N", help="validity in days (default 30)")
    d.add_argument("--force", action="store_true", help="overwrite existing certificates and keys in DIR")
    d.set_defaults(func=_cmd_certs_dev)


def config_snippet(certs: DevCerts) -> str:
    """The service config and manifest lines (YAML) that use these
    certificates: merge them into the existing files."""
    # Absolute: the config may live anywhere relative to the directory.
    service: dict = {"tls": {"cert": str(certs.server_cert.resolve()), "key": str(certs.server_key.resolve()),
                             "client_ca": str(certs.ca_cert.resolve())}}
    people = {role: [{"id": c.principal_id, "certificate": {"uri_san": c.uri}}
                     for c in certs.clients if c.kind == kind]
              for role, kind in (("approvers", "approver"), ("admins", "admin"))}
    people = {role: entries for role, entries in people.items() if entries}
    if people:
        service["identity"] = people
    parts = ["# service config\n" + yaml.safe_dump(service, sort_keys=False)]
    for c in certs.clients:
        if c.kind == "agent":
            manifest = {"credentials": {"certificate": {"uri_san": c.uri}}}
            parts.append(f"# agent manifest of {c.principal_id}\n" + yaml.safe_dump(manifest, sort_keys=False))
    return "\n".join(parts)


def _cmd_certs_dev(args: argparse.Namespace) -> int:
    try:
        certs = make_dev_certs(
            Path(args.out), agents=args.agent or [DEFAULT_AGENT], approvers=args.approver or ["approver"],
            admins=args.admin or ["admin"], hosts=args.host or ["localhost", "127.0.0.1", "::1"],
            trust_domain=args.trust_domain, days=args.days, force=args.force)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    for path in certs.files:
        print(f"wrote {path}")
    print()
    print(config_snippet(certs), end="")
    return 0
