"""The Node.js client (examples/clients/node): its demo story against a real
service, its Struct and token helpers, and scripts/setup-node.sh.

Node and the pinned npm packages are part of `make test` (scripts/setup.sh
--dev installs them): when they are missing these tests fail, they never skip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from enforcer.identity.certs import make_dev_certs
from tests.conftest import REPO, Service, free_port, write_config
from tests.server.test_tls import TlsService, agents_with_certificate, cert_of, client, tls_block

NODE_DIR = REPO / "examples" / "clients" / "node"
DEMO = NODE_DIR / "demo.js"
SETUP_NODE = REPO / "scripts" / "setup-node.sh"
AGENT = "finance_agent_v2"


def node() -> str:
    """The node binary, with the npm packages pinned in package.json installed; else the test fails."""
    path = shutil.which("node")
    if not path:
        pytest.fail("node is not installed: run scripts/setup.sh --dev (make test does)")
    pinned = json.loads((NODE_DIR / "package.json").read_text())["dependencies"]
    for name, version in pinned.items():
        installed = REPO / ".cache" / "node" / "node_modules" / name / "package.json"
        have = json.loads(installed.read_text())["version"] if installed.exists() else None
        if have != version:
            pytest.fail(f"npm package {name}@{version} is not installed in .cache/node (found {have}): "
                        "run scripts/setup.sh --dev (make test does)")
    return path


def run_node(*args: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([node(), *args], cwd=REPO, capture_output=True, text=True, timeout=timeout, **kw)


def steps_of(stdout: str) -> dict[int, dict]:
    steps = {}
    for line in stdout.splitlines():
        record = json.loads(line)
        steps[record["step"]] = record
    return steps


def key_file_of(svc: Service) -> Path:
    return svc.credentials_dir / f"{AGENT}.key"


def test_node_demo_plays_the_story_against_the_service(tmp_path):
    svc = Service(write_config(tmp_path))
    try:
        key = key_file_of(svc)
        r = run_node(str(DEMO), "--target", svc.address, "--key-file", str(key), "--json")
        lines = svc.log_lines()
    finally:
        svc.stop()
    assert r.returncode == 0, r.stdout + r.stderr
    steps = steps_of(r.stdout)
    assert sorted(steps) == [1, 2, 3, 4, 5, 6, 7], r.stdout
    assert all(s["ok"] for s in steps.values()), r.stdout

    assert steps[1]["rpc"] == "StartTask" and steps[1]["task_id"] and steps[1]["token_received"]
    assert steps[1]["token_expires_at"]
    assert steps[2]["rpc"] == "Decide" and steps[2]["outcome"] == "OUTCOME_APPROVE"
    assert steps[3]["rpc"] == "Execute" and steps[3]["status"] == "EXECUTION_STATUS_SUCCEEDED"
    assert steps[3]["output"]["invoice_id"] == "INV-1001"
    # The injected transfer: transfer_funds is governed by requires_human_approval.
    assert steps[4]["outcome"] == "OUTCOME_ESCALATE", steps[4]
    assert steps[5]["code"] == 16 and steps[5]["code_name"] == "UNAUTHENTICATED", steps[5]
    assert steps[6]["code"] == 7 and steps[6]["code_name"] == "PERMISSION_DENIED", steps[6]
    assert steps[7]["rpc"] == "RenewTaskToken" and steps[7]["token_changed"]
    assert steps[7]["outcome"] == "OUTCOME_APPROVE"

    # No token and no API key secret is ever printed by the demo or written to the log.
    secret = key.read_text().strip()
    for text in (r.stdout, r.stderr, *lines):
        assert "v4.public." not in text and secret not in text

    # Steps 5 and 6 are refused on the record: a forged signature, a borrowed identity.
    refused = [json.loads(line)["record"] for line in lines if '"auth_refused"' in line]
    by_refusal = {e["refusal"]: e for e in refused}
    assert sorted(by_refusal) == ["bad_signature", "wrong_agent"], refused
    assert steps[5]["reason"] == "bad_signature" and steps[6]["reason"] == "wrong_agent"
    forged, borrowed = by_refusal["bad_signature"], by_refusal["wrong_agent"]
    assert forged["status"] == "UNAUTHENTICATED" and forged["rpc"] == "Decide"
    assert forged["agent_id"] == AGENT and forged["task_id"] == steps[1]["task_id"]
    assert forged["principal"] is None  # nothing was proven
    assert borrowed["status"] == "PERMISSION_DENIED" and borrowed["agent_id"] == "someone_else"
    assert borrowed["principal"]["id"] == AGENT
    renewed = [json.loads(line)["record"] for line in lines if '"token_renewed"' in line]
    assert [e["task_id"] for e in renewed] == [steps[1]["task_id"]]


def assert_story(r: subprocess.CompletedProcess) -> dict[int, dict]:
    assert r.returncode == 0, r.stdout + r.stderr
    steps = steps_of(r.stdout)
    assert sorted(steps) == [1, 2, 3, 4, 5, 6, 7] and all(s["ok"] for s in steps.values()), r.stdout
    assert [steps[n].get("code") for n in (5, 6)] == [16, 7]
    return steps


def test_node_demo_over_tls_with_the_api_key(tmp_path):
    certs = make_dev_certs(tmp_path / "certs", agents=[AGENT])
    path = write_config(tmp_path / "svc", tls=tls_block(certs), plaintext=False)
    svc = TlsService(path, client(certs))
    try:
        r = run_node(str(DEMO), "--target", svc.address, "--json", "--ca", str(certs.ca_cert),
                     "--key-file", str(svc.credentials_dir / f"{AGENT}.key"))
        plain = run_node(str(DEMO), "--target", svc.address, "--json", "--timeout", "2",
                         "--key-file", str(svc.credentials_dir / f"{AGENT}.key"), timeout=30)
    finally:
        svc.stop()
    assert_story(r)
    assert plain.returncode == 2 and plain.stdout == ""  # a plaintext client never reaches a TLS port


def test_node_demo_over_mtls_with_the_agent_certificate_alone(tmp_path):
    certs = make_dev_certs(tmp_path / "certs", agents=[AGENT])
    agent_cert = cert_of(certs, "agent", AGENT)
    agents = agents_with_certificate(tmp_path / "agents", agent_cert.uri)
    path = write_config(tmp_path / "svc", agents_dir=str(agents), plaintext=False,
                        tls=tls_block(certs, client_ca=True))
    svc = TlsService(path, client(certs, ("agent", AGENT)))
    try:
        r = run_node(str(DEMO), "--target", svc.address, "--json", "--ca", str(certs.ca_cert),
                     "--cert", str(agent_cert.cert), "--key", str(agent_cert.key))  # no --key-file
        records = svc.records()
    finally:
        svc.stop()
    steps = assert_story(r)
    (started,) = [e for e in records if e["kind"] == "task_started" and e["task_id"] == steps[1]["task_id"]]
    assert started["principal"]["cert_fingerprint"].startswith("sha256:")
    assert started["principal"]["key_id"] is None  # the certificate proved the agent


def test_node_demo_without_a_service_exits_2():
    r = run_node(str(DEMO), "--target", f"127.0.0.1:{free_port()}", "--key-file", os.devnull, "--timeout", "1",
                 timeout=30)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "not reachable" in r.stderr and "make run" in r.stderr
    assert r.stdout == ""


def test_node_demo_help_and_a_bad_option():
    r = run_node(str(DEMO), "--help", timeout=30)
    assert r.returncode == 0
    for option in ("--target", "--key-file", "--agent", "--json", "--ca", "--cert", "--key"):
        assert option in r.stdout
    r = run_node(str(DEMO), "--bogus", timeout=30)
    assert r.returncode == 2 and "--bogus" in r.stderr


def test_node_demo_without_a_key_says_make_run(tmp_path):
    r = run_node(str(DEMO), "--key-file", str(tmp_path / "none.key"), timeout=30)
    assert r.returncode == 2
    assert "none.key" in r.stderr and "make run" in r.stderr


STRUCT_ROUND_TRIP = r"""
const aecl = require(process.argv[1]);
const { EnforcerService } = aecl.loadProto();
const decide = EnforcerService.service.Decide;
const value = JSON.parse(process.argv[2]);
const wire = decide.requestSerialize({ call: { name: 'x', args: aecl.toStruct(value) } });
const back = decide.requestDeserialize(wire);
process.stdout.write(JSON.stringify(aecl.fromStruct(back.call.args)));
"""


def test_struct_helpers_round_trip_through_the_wire():
    value = {"s": "INV-1001", "n": 100000, "f": 1.5, "b": False, "z": None,
             "list": [1, "a", {"deep": [True, None]}], "obj": {"nested": {"empty": []}}, "empty": {}}
    r = run_node("-e", STRUCT_ROUND_TRIP, str(NODE_DIR / "lib" / "aecl.js"), json.dumps(value), timeout=30)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == value


TAMPER = r"""
const { tampered } = require(process.argv[1]);
const b64 = (n, seed) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 37 + seed) % 256)).toString('base64url');
const out = [];
for (let n = 60; n < 70; n++) {
  for (const footer of ['', '.' + Buffer.from('{"kid":"k4.pid.x"}').toString('base64url')]) {
    const token = 'v4.public.' + b64(n, n) + footer;
    const forged = tampered(token);
    const [v, p, body, foot] = token.split('.');
    const [fv, fp, fbody, ffoot] = forged.split('.');
    out.push(forged.length === token.length && fv === v && fp === p && ffoot === foot
             && fbody.slice(0, -1) === body.slice(0, -1)
             && !Buffer.from(fbody, 'base64url').equals(Buffer.from(body, 'base64url')));
  }
}
process.stdout.write(JSON.stringify(out));
"""


def test_the_forged_token_changes_the_signature_bytes_and_keeps_the_footer():
    r = run_node("-e", TAMPER, str(DEMO), timeout=30)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [True] * 20


def test_setup_node_is_idempotent_and_names_a_missing_node(tmp_path):
    node()  # installed: a second run fetches nothing and is quick
    r = subprocess.run([str(SETUP_NODE)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == "", r.stderr

    bin_dir = tmp_path / "bin"  # a PATH with what the script needs, but no node
    bin_dir.mkdir()
    (bin_dir / "dirname").symlink_to(shutil.which("dirname"))
    r = subprocess.run(["/bin/bash", str(SETUP_NODE)], cwd=REPO, capture_output=True, text=True, timeout=60,
                       env={"PATH": str(bin_dir)})
    assert r.returncode == 1
    assert "node is not installed" in r.stderr and "apt-get install nodejs" in r.stderr
