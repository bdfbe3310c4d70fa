"""OPA bundles of the policy set, against the real opa binary: deterministic
archives that `opa inspect` reads, a sidecar that loads one through OPA's
bundle plugin and decides exactly as the embedded engine does, and a sidecar
running another revision that makes the engine fail closed."""

from __future__ import annotations

import functools
import gzip
import http.server
import json
import subprocess
import sys
import tarfile
import threading
import time

import pytest
import requests
import yaml

from enforcer.config import OpaConfig, PolicyConfig, RiskModel, load_config
from enforcer.errors import ConfigError, EngineUnavailable, PolicyError
from enforcer.policy.bundle import build_bundle, read_bundle_revision
from enforcer.policy.decision import parse_decision
from enforcer.policy.wasm import WasmEngine
from enforcer.policy.opa import OpaEngine, OpaProcess, free_port
from enforcer.policy.policyset import build_policy_set
from enforcer.server.app import build_components
from tests.conftest import REPO, write_config
from tests.policy.opa_helpers import opa_binary
from tests.policy.test_engines import AGENTS, POLICY, TABLE, policy_input




@pytest.fixture(scope="module")
def policy_set():
    return build_policy_set(POLICY.rego_dir, AGENTS, POLICY)


@pytest.fixture(scope="module")
def other_policy_set():
    """The same modules under different data: another revision."""
    policy = POLICY.model_copy(update={"risk": RiskModel(amount_threshold=1)})
    return build_policy_set(policy.rego_dir, AGENTS, policy)


@pytest.fixture(scope="module")
def bundle(policy_set, tmp_path_factory):
    return build_bundle(policy_set, tmp_path_factory.mktemp("bundle") / "aecl.tar.gz")


@pytest.fixture(scope="module")
def bundle_sidecar(bundle):
    """A real `opa run --server` whose bundle plugin loaded the bundle."""
    proc = OpaProcess(opa_binary(), "127.0.0.1", free_port(), bundle)
    proc.start()
    yield proc
    proc.stop()


# --- the archive ------------------------------------------------------------


def test_same_policy_set_gives_byte_identical_bundles(policy_set, tmp_path):
    a = build_bundle(policy_set, tmp_path / "a.tar.gz").read_bytes()
    again = build_policy_set(POLICY.rego_dir, AGENTS, POLICY)
    b = build_bundle(again, tmp_path / "b.tar.gz").read_bytes()
    assert a == b


def test_changing_data_changes_the_revision_and_the_bytes(policy_set, other_policy_set, tmp_path):
    a = build_bundle(policy_set, tmp_path / "a.tar.gz")
    b = build_bundle(other_policy_set, tmp_path / "b.tar.gz")
    assert read_bundle_revision(a) == policy_set.revision
    assert read_bundle_revision(b) == other_policy_set.revision
    assert policy_set.revision != other_policy_set.revision
    assert a.read_bytes() != b.read_bytes()


def test_archive_layout_is_a_standard_deterministic_bundle(policy_set, bundle):
    assert gzip.open(bundle).read(1)  # a real gzip stream
    assert bundle.read_bytes()[4:8] == b"\0\0\0\0"  # gzip header mtime 0
    with tarfile.open(bundle, "r:gz") as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        assert names == sorted(names)
        assert all((m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "", "") for m in members)
        manifest = json.loads(tar.extractfile("/.manifest").read())
        data = json.loads(tar.extractfile("/data.json").read())
    assert manifest == {"revision": policy_set.revision, "roots": ["aecl"], "rego_version": 1}
    assert data == policy_set.data
    assert set(names) == {"/.manifest", "/data.json", *("/" + p for p in policy_set.modules)}
    assert "/aecl/main.rego" in names
    assert not [n for n in names if n.endswith("_test.rego")]


def test_opa_inspect_reads_the_manifest_revision(policy_set, bundle):
    out = subprocess.run([opa_binary(), "inspect", "--format", "json", str(bundle)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    info = json.loads(out.stdout)
    assert info["manifest"]["revision"] == policy_set.revision
    assert info["manifest"]["roots"] == ["aecl"]
    assert "data.aecl.main" in info["namespaces"]


def test_opa_evaluates_the_bundle_offline(bundle):
    doc = policy_input("delete_record", {"record_id": "r1"})
    out = subprocess.run(
        [opa_binary(), "eval", "--format", "json", "--bundle", str(bundle), "--stdin-input", "data.aecl.main.decision"],
        input=json.dumps(doc), capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)["result"][0]["expressions"][0]["value"]["outcome"] == "block"


def test_reading_the_revision_of_a_non_bundle_is_a_config_error(tmp_path):
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a bundle")
    with pytest.raises(ConfigError, match="cannot read bundle"):
        read_bundle_revision(junk)


# --- a sidecar loading the bundle through its bundle plugin -----------------


def test_sidecar_reports_the_bundle_through_the_bundle_plugin(policy_set, bundle_sidecar):
    base = f"http://127.0.0.1:{bundle_sidecar.port}"
    assert requests.get(f"{base}/health?bundles", timeout=5).status_code == 200
    bundles = requests.get(f"{base}/v1/data/system/bundles", timeout=5).json()["result"]
    assert bundles["aecl"]["manifest"]["revision"] == policy_set.revision


@pytest.fixture(scope="module")
def engines(policy_set, bundle, bundle_sidecar):
    opa = OpaEngine(policy_set, OpaConfig(port=bundle_sidecar.port, timeout_s=5, bundle=bundle))
    yield WasmEngine(policy_set), opa
    opa.close()


@pytest.mark.parametrize(("case", "doc", "outcome", "gate", "words"), TABLE, ids=[t[0] for t in TABLE])
def test_bundle_sidecar_decides_as_the_embedded_engine(engines, case, doc, outcome, gate, words):
    embedded, opa = engines
    a, b = embedded.evaluate(doc), opa.evaluate(doc)
    assert a == b, f"{case}: embedded {a} != opa bundle {b}"
    d = parse_decision(b, revision=opa.revision, decision_id="d")
    assert (d.outcome, d.gate) == (outcome, gate), d
    assert words in d.reason


def test_bundle_mode_pushes_nothing_over_rest(policy_set, engines, bundle_sidecar):
    base = f"http://127.0.0.1:{bundle_sidecar.port}"
    # Exactly the bundle's modules, as the bundle plugin names them (<bundle>/<path>).
    policies = requests.get(f"{base}/v1/policies", timeout=5).json()["result"]
    assert sorted(p["id"] for p in policies) == sorted(f"aecl/{path}" for path in policy_set.modules)
    # The bundle owns data.aecl: a REST write there is refused, so a push could not even succeed.
    refused = requests.put(f"{base}/v1/data/aecl/config/x", json=1, timeout=5)
    assert refused.status_code == 400 and "owned by bundle" in refused.text


def test_sidecar_with_another_revision_fails_closed(policy_set, other_policy_set, tmp_path):
    stale = build_bundle(other_policy_set, tmp_path / "stale.tar.gz")
    proc = OpaProcess(opa_binary(), "127.0.0.1", free_port(), stale)
    proc.start()
    try:
        # Startup does not crash the service: it logs, and every call is blocked.
        engine = OpaEngine(policy_set, OpaConfig(port=proc.port, timeout_s=5, bundle=stale))
        for doc in (policy_input("read_invoice"), policy_input("delete_record", {"record_id": "r1"})):
            with pytest.raises(PolicyError, match="revision") as e:
                engine.evaluate(doc)
            assert not isinstance(e.value, EngineUnavailable)
            assert other_policy_set.revision in str(e.value) and policy_set.revision in str(e.value)
        engine.close()
    finally:
        proc.stop()


class QuietFileHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def test_fleet_sidecar_that_activates_another_revision_is_caught_on_the_next_call(
        policy_set, other_policy_set, tmp_path):
    """A sidecar polling a bundle server (how a fleet gets its policy) picks up
    a new bundle mid-flight: the very next decision is refused, not attributed
    to the service's revision."""
    served = tmp_path / "served"
    served.mkdir()
    build_bundle(policy_set, served / "aecl.tar.gz")
    handler = functools.partial(QuietFileHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = free_port()
    config = tmp_path / "opa.json"
    config.write_text(json.dumps({
        "services": {"bundles": {"url": f"http://127.0.0.1:{server.server_address[1]}"}},
        "bundles": {"aecl": {"service": "bundles", "resource": "aecl.tar.gz",
                             "polling": {"min_delay_seconds": 1, "max_delay_seconds": 1}}},
    }))
    proc = subprocess.Popen([opa_binary(), "run", "--server", "--addr", f"127.0.0.1:{port}", "--disable-telemetry",
                             "--log-level", "error", "--config-file", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def active_revision():
            try:
                bundles = requests.get(f"http://127.0.0.1:{port}/v1/data/system/bundles", timeout=1).json()
                return bundles["result"]["aecl"]["manifest"]["revision"]
            except (requests.RequestException, KeyError, ValueError):
                return None

        def wait_for(revision):
            deadline = time.monotonic() + 15
            while active_revision() != revision:
                assert time.monotonic() < deadline, f"sidecar never activated {revision}"
                time.sleep(0.1)

        wait_for(policy_set.revision)
        engine = OpaEngine(policy_set, OpaConfig(port=port, timeout_s=5, bundle=served / "aecl.tar.gz"))
        assert engine.evaluate(policy_input("read_invoice"))["outcome"] == "approve"
        build_bundle(other_policy_set, served / "aecl.tar.gz")
        wait_for(other_policy_set.revision)
        with pytest.raises(PolicyError, match="rebuild the bundle"):
            engine.evaluate(policy_input("read_invoice"))
        engine.close()
    finally:
        proc.terminate()
        proc.wait(10)
        server.shutdown()
        server.server_close()


def test_sidecar_without_any_bundle_is_unavailable(policy_set, bundle):
    proc = OpaProcess(opa_binary(), "127.0.0.1", free_port())  # plain OPA, nothing loaded
    proc.start()
    try:
        engine = OpaEngine(policy_set, OpaConfig(port=proc.port, timeout_s=5, bundle=bundle))
        with pytest.raises(EngineUnavailable, match="no active bundle"):
            engine.evaluate(policy_input("read_invoice"))
        engine.close()
    finally:
        proc.stop()


def test_stopped_bundle_sidecar_is_unavailable(policy_set, bundle):
    engine = OpaEngine(policy_set, OpaConfig(port=free_port(), timeout_s=0.5, bundle=bundle))
    with pytest.raises(EngineUnavailable, match="unavailable"):
        engine.evaluate(policy_input("read_invoice"))
    engine.close()


def test_supervised_opa_refuses_a_stale_bundle_file_at_startup(policy_set, other_policy_set, tmp_path):
    stale = build_bundle(other_policy_set, tmp_path / "stale.tar.gz")
    with pytest.raises(ConfigError, match="rebuild it"):
        OpaEngine(policy_set, OpaConfig(port=free_port(), supervise=True, bundle=stale, binary=opa_binary()))


# --- aecl policy build --------------------------------------------------------


def aecl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "enforcer", *args], capture_output=True, text=True, cwd=REPO)


def test_policy_build_help():
    out = aecl("policy", "build", "--help")
    assert out.returncode == 0, out.stderr
    assert "OPA bundle" in out.stdout and "--out" in out.stdout and "--config" in out.stdout


def test_policy_build_writes_the_revision_the_service_reports(tmp_path):
    config_path = write_config(tmp_path)
    out_file = tmp_path / "out" / "aecl.tar.gz"
    out = aecl("policy", "build", "--config", str(config_path), "--out", str(out_file))
    assert out.returncode == 0, out.stderr
    components = build_components(load_config(config_path))
    try:
        service_revision = components.engine.revision
    finally:
        components.close()
    assert read_bundle_revision(out_file) == service_revision
    assert service_revision in out.stdout and str(out_file) in out.stdout
    # Building again gives the same bytes.
    again = tmp_path / "again.tar.gz"
    assert aecl("policy", "build", "--config", str(config_path), "--out", str(again)).returncode == 0
    assert again.read_bytes() == out_file.read_bytes()


def test_service_with_a_supervised_bundle_sidecar(tmp_path):
    bundle = tmp_path / "aecl.tar.gz"
    opa = {"supervise": True, "port": free_port(), "timeout_s": 5, "bundle": str(bundle), "binary": opa_binary()}
    config_path = write_config(tmp_path, policy={"engine": "opa", "rego_dir": str(REPO / "rego"), "opa": opa})
    assert aecl("policy", "build", "--config", str(config_path), "--out", str(bundle)).returncode == 0
    components = build_components(load_config(config_path))
    try:
        engine = components.engine
        assert engine.name == "opa" and engine.revision == read_bundle_revision(bundle)
        d = parse_decision(engine.evaluate(policy_input("read_invoice", {"invoice_id": "INV-1"})),
                           revision=engine.revision, decision_id="d")
        assert d.outcome == "approve"
    finally:
        components.close()


def test_bundle_path_in_config_is_relative_to_the_config_file(tmp_path):
    config_path = write_config(tmp_path, policy={"engine": "opa", "rego_dir": str(REPO / "rego"),
                                                 "opa": {"bundle": "build/aecl.tar.gz"}})
    assert load_config(config_path).policy.opa.bundle == (tmp_path / "build/aecl.tar.gz").resolve()


def test_unknown_opa_setting_is_still_refused(tmp_path):
    # write_config loads what it writes (to provision keys), so the typo goes in afterwards.
    config_path = write_config(tmp_path)
    doc = yaml.safe_load(config_path.read_text())
    doc["policy"]["opa"] = {"bundel": "x"}
    config_path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="bundel"):
        load_config(config_path)


def test_policy_config_accepts_a_bundle():
    assert PolicyConfig(rego_dir=REPO / "rego", opa=OpaConfig(bundle="b.tar.gz")).opa.bundle.name == "b.tar.gz"
