"""TLS and mTLS on the gRPC port, against a real `aecl serve` process: real
grpc TLS handshakes with development certificates (make_dev_certs), API keys
over TLS, client certificates that prove an agent or an administrator, and
the refusal of plaintext beyond loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from google.protobuf import struct_pb2

from enforcer._gen.aecl.v1 import enforcer_pb2 as pb
from enforcer._gen.aecl.v1 import enforcer_pb2_grpc as pb_grpc
from enforcer.config import load_config
from enforcer.errors import ConfigError
from enforcer.identity.certs import DevCerts, make_dev_certs
from tests.conftest import EXAMPLES, REPO, free_port, write_config

AGENT = "finance_agent_v2"
CALL_TIMEOUT = 10  # seconds: a refused handshake must fail, not hang


# --- helpers ---------------------------------------------------------------------


class TlsService:
    """`aecl serve` as a child process (like tests.conftest.Service), waited
    for over a TLS channel built from `ready_credentials`."""

    def __init__(self, config_path: Path, ready_credentials: grpc.ChannelCredentials) -> None:
        self.config_path = config_path
        self.config = yaml.safe_load(config_path.read_text())
        self.address = self.config["listen"]
        self.audit_path = Path(self.config["audit"]["path"])
        self.credentials_dir = Path(self.config["identity"]["credentials_dir"])
        self.stderr_path = config_path.with_name("serve.log")
        self._channels: list[grpc.Channel] = []
        with open(self.stderr_path, "wb") as stderr:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "enforcer", "serve", "--config", str(config_path)],
                stdout=subprocess.DEVNULL, stderr=stderr, env=dict(os.environ), cwd=REPO,
            )
        try:
            grpc.channel_ready_future(self.channel(ready_credentials)).result(timeout=30)
        except grpc.FutureTimeoutError:
            self.stop()
            raise RuntimeError(f"service did not start: {self.stderr_path.read_text()}") from None

    def channel(self, credentials: grpc.ChannelCredentials | None) -> grpc.Channel:
        """A TLS channel with these credentials, or plaintext for None."""
        ch = (grpc.insecure_channel(self.address) if credentials is None
              else grpc.secure_channel(self.address, credentials))
        self._channels.append(ch)
        return ch

    def enforcer(self, credentials: grpc.ChannelCredentials | None) -> pb_grpc.EnforcerServiceStub:
        return pb_grpc.EnforcerServiceStub(self.channel(credentials))

    def admin(self, credentials: grpc.ChannelCredentials | None) -> pb_grpc.AdminServiceStub:
        return pb_grpc.AdminServiceStub(self.channel(credentials))

    def key(self, principal_id: str) -> str:
        return (self.credentials_dir / f"{principal_id}.key").read_text().strip()

    def records(self) -> list[dict]:
        return [json.loads(line)["record"] for line in self.audit_path.read_text().splitlines()]

    def stop(self) -> None:
        for ch in self._channels:
            ch.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def client(certs: DevCerts, as_: tuple[str, str] | None = None) -> grpc.ChannelCredentials:
    """TLS trusting the dev CA; with the client certificate of (kind, id) if given."""
    ca = certs.ca_cert.read_bytes()
    if as_ is None:
        return grpc.ssl_channel_credentials(root_certificates=ca)
    c = cert_of(certs, *as_)
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=c.key.read_bytes(),
                                        certificate_chain=c.cert.read_bytes())


def cert_of(certs: DevCerts, kind: str, principal_id: str):
    (c,) = [c for c in certs.clients if (c.kind, c.principal_id) == (kind, principal_id)]
    return c


def fingerprint(path: Path) -> str:
    return "sha256:" + x509.load_pem_x509_certificate(path.read_bytes()).fingerprint(hashes.SHA256()).hex()


def tls_block(certs: DevCerts, *, client_ca: bool = False) -> dict:
    block: dict = {"cert": str(certs.server_cert), "key": str(certs.server_key)}
    if client_ca:
        block["client_ca"] = str(certs.ca_cert)  # mTLS: a client certificate is required
    return block


def agents_with_certificate(directory: Path, uri: str) -> Path:
    """The example manifests, the finance agent's given `credentials: certificate: uri_san`."""
    directory.mkdir(parents=True)
    for src in EXAMPLES.joinpath("agents").glob("*.yaml"):
        manifest = yaml.safe_load(src.read_text())
        if manifest["agent_id"] == AGENT:
            manifest["credentials"] = {"certificate": {"uri_san": uri}}
        (directory / src.name).write_text(yaml.safe_dump(manifest, sort_keys=False))
    return directory


def start_task(stub, credential: str = "", agent: str = AGENT) -> pb.StartTaskResponse:
    return stub.StartTask(pb.StartTaskRequest(agent_id=agent, declared_goal="Review vendor invoices",
                                              credential=credential), timeout=CALL_TIMEOUT)


def decide_read_invoice(stub, task_id: str, token: str) -> pb.Decision:
    args = struct_pb2.Struct()
    args.update({"invoice_id": "INV-1001"})
    req = pb.DecideRequest(task_id=task_id, agent_id=AGENT, call=pb.ToolCall(name="read_invoice", args=args))
    return stub.Decide(req, metadata=(("authorization", f"Bearer {token}"),), timeout=CALL_TIMEOUT).decision


def refused(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value


def task_started(svc: TlsService, task_id: str) -> dict:
    (entry,) = [r for r in svc.records() if r["kind"] == "task_started" and r["task_id"] == task_id]
    return entry


def auth_refusals(svc: TlsService) -> list[dict]:
    return [r for r in svc.records() if r["kind"] == "auth_refused"]


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> DevCerts:
    return make_dev_certs(tmp_path_factory.mktemp("tls") / "certs", agents=[AGENT],
                          approvers=["approver"], admins=["admin"])


# --- 1. TLS, no client certificates ---------------------------------------------


@pytest.fixture(scope="module")
def tls_service(tmp_path_factory, certs):
    path = write_config(tmp_path_factory.mktemp("svc-tls"), tls=tls_block(certs), plaintext=False)
    svc = TlsService(path, client(certs))
    try:
        yield svc
    finally:
        svc.stop()


def test_tls_api_key_and_token_work(tls_service, certs):
    stub = tls_service.enforcer(client(certs))
    started = start_task(stub, tls_service.key(AGENT))
    assert started.task_id and started.token.startswith("v4.public.")
    decision = decide_read_invoice(stub, started.task_id, started.token)
    assert decision.outcome == pb.OUTCOME_APPROVE, decision
    principal = task_started(tls_service, started.task_id)["principal"]
    assert principal["kind"] == "agent" and principal["id"] == AGENT
    assert principal["key_id"] and principal["cert_fingerprint"] is None


def test_tls_port_refuses_plaintext_clients(tls_service):
    err = refused(lambda: start_task(tls_service.enforcer(None), tls_service.key(AGENT)))
    assert err.code() == grpc.StatusCode.UNAVAILABLE, err


def test_tls_client_not_trusting_the_server_ca_fails(tls_service, tmp_path):
    other = make_dev_certs(tmp_path / "other", agents=[AGENT])
    err = refused(lambda: start_task(tls_service.enforcer(client(other)), tls_service.key(AGENT)))
    assert err.code() == grpc.StatusCode.UNAVAILABLE, err


def test_tls_without_key_is_unauthenticated(tls_service, certs):
    # No client_ca: a client certificate is neither asked for nor counted.
    err = refused(lambda: start_task(tls_service.enforcer(client(certs, ("agent", AGENT)))))
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED, err


# --- 2. mTLS required ------------------------------------------------------------


@pytest.fixture(scope="module")
def mtls_service(tmp_path_factory, certs):
    directory = tmp_path_factory.mktemp("svc-mtls")
    agents = agents_with_certificate(directory / "agents", cert_of(certs, "agent", AGENT).uri)
    approver_uri = cert_of(certs, "approver", "approver").uri
    path = write_config(
        directory, agents_dir=str(agents), plaintext=False,
        tls=tls_block(certs, client_ca=True),
        identity={"approvers": [{"id": "approver", "certificate": {"uri_san": approver_uri}}],
                  "admins": [{"id": "admin"}]},
    )
    svc = TlsService(path, client(certs, ("agent", AGENT)))
    try:
        yield svc
    finally:
        svc.stop()


def test_mtls_required_refuses_clients_without_a_certificate(mtls_service, certs):
    err = refused(lambda: start_task(mtls_service.enforcer(client(certs)), mtls_service.key(AGENT)))
    assert err.code() == grpc.StatusCode.UNAVAILABLE, err


def test_mtls_agent_certificate_starts_a_task_without_a_key(mtls_service, certs):
    stub = mtls_service.enforcer(client(certs, ("agent", AGENT)))
    started = start_task(stub, credential="")
    assert started.task_id and started.token.startswith("v4.public.")
    decision = decide_read_invoice(stub, started.task_id, started.token)
    assert decision.outcome == pb.OUTCOME_APPROVE, decision
    principal = task_started(mtls_service, started.task_id)["principal"]
    assert principal["kind"] == "agent" and principal["id"] == AGENT
    assert principal["cert_fingerprint"].startswith("sha256:")
    assert principal["cert_fingerprint"] == fingerprint(cert_of(certs, "agent", AGENT).cert)
    assert principal["key_id"] is None


def test_mtls_approver_certificate_cannot_act_as_the_agent(mtls_service, certs):
    before = len(auth_refusals(mtls_service))
    stub = mtls_service.enforcer(client(certs, ("approver", "approver")))
    err = refused(lambda: start_task(stub, credential=""))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED, err
    assert "cannot act as an agent" in err.details()
    (entry,) = auth_refusals(mtls_service)[before:]
    assert entry["refusal"] == "wrong_role" and entry["status"] == "PERMISSION_DENIED"
    assert entry["principal"]["kind"] == "approver"
    assert entry["principal"]["cert_fingerprint"] == fingerprint(cert_of(certs, "approver", "approver").cert)


def test_mtls_agent_certificate_with_another_agents_id_is_refused(mtls_service, certs):
    stub = mtls_service.enforcer(client(certs, ("agent", AGENT)))
    err = refused(lambda: start_task(stub, credential="", agent="someone_else"))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED, err


# --- 3. certificates and API keys on one mTLS listener ----------------------------

# grpcio cannot ask for a client certificate without demanding one
# (require_client_auth=False never sends a CertificateRequest), so client_ca
# means mTLS required (enforcer.config.TlsConfig). API keys still work on top.


@pytest.fixture(scope="module")
def admin_cert_service(tmp_path_factory, certs):
    directory = tmp_path_factory.mktemp("svc-admin-cert")
    agents = agents_with_certificate(directory / "agents", cert_of(certs, "agent", AGENT).uri)
    admin_uri = cert_of(certs, "admin", "admin").uri
    path = write_config(
        directory, agents_dir=str(agents), plaintext=False, tls=tls_block(certs, client_ca=True),
        identity={"approvers": [{"id": "approver"}],
                  "admins": [{"id": "admin", "certificate": {"uri_san": admin_uri}}]},
    )
    svc = TlsService(path, client(certs, ("agent", AGENT)))
    try:
        yield svc
    finally:
        svc.stop()


def test_mtls_api_keys_still_work_beside_the_certificate(admin_cert_service, certs):
    stub = admin_cert_service.enforcer(client(certs, ("agent", AGENT)))
    started = start_task(stub, admin_cert_service.key(AGENT))
    assert decide_read_invoice(stub, started.task_id, started.token).outcome == pb.OUTCOME_APPROVE
    status = admin_cert_service.admin(client(certs, ("agent", AGENT))).GetPolicyStatus(
        pb.GetPolicyStatusRequest(), metadata=(("authorization", f"Bearer {admin_cert_service.key('admin')}"),),
        timeout=CALL_TIMEOUT)
    assert status.policy_revision


def test_mtls_admin_certificate_calls_admin_service_without_a_key(admin_cert_service, certs):
    status = admin_cert_service.admin(client(certs, ("admin", "admin"))).GetPolicyStatus(
        pb.GetPolicyStatusRequest(), timeout=CALL_TIMEOUT)
    assert status.policy_revision


def test_mtls_agent_certificate_is_denied_admin_service(admin_cert_service, certs):
    err = refused(lambda: admin_cert_service.admin(client(certs, ("agent", AGENT))).GetPolicyStatus(
        pb.GetPolicyStatusRequest(), timeout=CALL_TIMEOUT))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED, (err.code(), err.details())


# --- 4. plaintext only on loopback ---------------------------------------------


def test_plaintext_beyond_loopback_is_refused_at_load(tmp_path):
    path = write_config(tmp_path)  # plaintext on 127.0.0.1: valid
    config = yaml.safe_load(path.read_text())
    config["listen"] = f"0.0.0.0:{free_port()}"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "loopback" in str(err.value) and "plaintext" in str(err.value)


@pytest.mark.parametrize("change, message", [
    ({"plaintext": False}, "tls: not configured"),
    ({"tls": {"cert": "server.pem", "key": "server.key"}}, "plaintext: cannot be true when tls"),
])
def test_transport_must_be_chosen_explicitly(tmp_path, change, message):
    path = write_config(tmp_path)
    path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), **change}))
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_serve_listen_override_beyond_loopback_refuses_plaintext(tmp_path):
    path = write_config(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "enforcer", "serve", "--config", str(path), "--listen", "0.0.0.0:0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, text=True)
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0, (out, err)
    assert "plaintext" in err and "0.0.0.0:0" in err and "loopback" in err, err
    assert "AECL serving on" not in out
