"""Rego modules to WebAssembly: `opa build -t wasm`, and the shipped build.

The embedded engine runs the policy as OPA compiles it to WebAssembly. That
needs the opa binary, which a fresh machine does not have: building it from
Debian's sources takes minutes. So the compiled shipped policy is a generated
artifact committed beside the code, like enforcer/_gen: `compiled/aecl.wasm`,
with `compiled/aecl.wasm.json` recording the digest of the modules it was
built from. A policy set whose modules have that digest (the repository's
rego/, unmodified) is served from it without OPA; any other is compiled with
the opa binary (policy.opa.binary, $OPA_BIN, PATH, the development build),
once per process for each distinct set of modules.

`make gen` rebuilds the artifact (`python -m enforcer.policy.wasm_build
--write`); `make gen-check` fails when the committed one is stale.

The build sees exactly the modules the OPA bundle holds (policy set modules,
test files excluded) at their paths relative to the policy directory; data is
not compiled in: the engine loads the data document at start-up.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from enforcer.errors import ConfigError
from enforcer.policy.policyset import ENTRYPOINT, load_modules

COMPILED_DIR = Path(__file__).resolve().parent / "compiled"
ARTIFACT = COMPILED_DIR / "aecl.wasm"
ARTIFACT_META = COMPILED_DIR / "aecl.wasm.json"
# The repository's policy directory, from which the artifact is built.
SHIPPED_REGO = Path(__file__).resolve().parents[2] / "rego"
BUILD_TIMEOUT_S = 120.0

_cache_lock = threading.Lock()
_cache: dict[str, bytes] = {}


def modules_digest(modules: dict[str, str]) -> str:
    """What the compiled module depends on: the entrypoint and every module's
    path and source."""
    h = hashlib.sha256(b"aecl-wasm-v1\x00" + ENTRYPOINT.encode() + b"\x00")
    for name, src in sorted(modules.items()):
        h.update(b"module\x00" + Path(name).as_posix().encode() + b"\x00" + src.encode() + b"\x00")
    return "sha256:" + h.hexdigest()


def shipped_meta() -> dict | None:
    try:
        return json.loads(ARTIFACT_META.read_text())
    except (OSError, ValueError):
        return None


def shipped_wasm(modules: dict[str, str]) -> bytes | None:
    """The committed build, when it was built from exactly these modules."""
    meta = shipped_meta()
    if not meta or meta.get("modules_digest") != modules_digest(modules):
        return None
    try:
        wasm = ARTIFACT.read_bytes()
    except OSError:
        return None
    if "sha256:" + hashlib.sha256(wasm).hexdigest() != meta.get("wasm_sha256"):
        return None  # a torn or edited artifact is never used
    return wasm


def opa_version(opa: str) -> str:
    try:
        out = subprocess.run([opa, "version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    for line in out.stdout.splitlines():
        if line.startswith("Version:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def compile_wasm(modules: dict[str, str], opa: str, *, entrypoints: Sequence[str] = (ENTRYPOINT,),
                 timeout_s: float = BUILD_TIMEOUT_S) -> bytes:
    """`opa build -t wasm -e aecl/main/decision` over the modules; raise
    ConfigError with OPA's message when they do not compile."""
    with tempfile.TemporaryDirectory(prefix="aecl-wasm-") as tmp:
        src = Path(tmp) / "src"
        for name, source in modules.items():
            path = src / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(source, encoding="utf-8")
        out = Path(tmp) / "bundle.tar.gz"
        try:
            # cwd=src and ".": the module paths OPA records are the policy set's own.
            flags = [f for e in entrypoints for f in ("-e", e)]
            done = subprocess.run([opa, "build", "-t", "wasm", *flags, "-o", str(out), "."],
                                  cwd=src, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise ConfigError(f"`opa build -t wasm` did not finish within {timeout_s:g}s") from None
        except OSError as e:
            raise ConfigError(f"cannot run {opa}: {e}") from e
        if done.returncode != 0:
            detail = " ".join((done.stderr or done.stdout).split())[:800]
            raise ConfigError(f"policy does not compile: {detail}")
        with tarfile.open(out, "r:gz") as tar:
            for member in tar.getmembers():
                if member.name.lstrip("/") == "policy.wasm":
                    f = tar.extractfile(member)
                    if f is not None:
                        return f.read()
    raise ConfigError("`opa build -t wasm` wrote no policy.wasm")


def wasm_for(modules: dict[str, str], opa_binary: str | None = None) -> bytes:
    """The compiled module for a policy set's modules: from this process's
    cache, the shipped build, or the opa binary."""
    from enforcer.policy.opa import find_opa_binary

    digest = modules_digest(modules)
    with _cache_lock:
        cached = _cache.get(digest)
    if cached is not None:
        return cached
    wasm = shipped_wasm(modules)
    if wasm is None:
        try:
            opa = find_opa_binary(opa_binary)
        except ConfigError as e:
            raise ConfigError(
                "this policy's Rego is not the compiled policy shipped with AECL (enforcer/policy/compiled), "
                f"so the embedded engine must compile it with OPA, and there is none: {e}") from None
        wasm = compile_wasm(modules, opa)
    with _cache_lock:
        _cache[digest] = wasm
    return wasm


def can_compile_without_opa(modules: dict[str, str]) -> bool:
    with _cache_lock:
        if modules_digest(modules) in _cache:
            return True
    return shipped_wasm(modules) is not None


# -- the artifact ------------------------------------------------------------------


def build_artifact(opa: str, rego_dir: Path = SHIPPED_REGO) -> dict:
    modules = load_modules(rego_dir)
    wasm = compile_wasm(modules, opa)
    meta = {
        "entrypoint": ENTRYPOINT,
        "modules_digest": modules_digest(modules),
        "modules": sorted(Path(m).as_posix() for m in modules),
        "opa_version": opa_version(opa),
        "wasm_sha256": "sha256:" + hashlib.sha256(wasm).hexdigest(),
        "generated_by": "python -m enforcer.policy.wasm_build --write (make gen)",
    }
    COMPILED_DIR.mkdir(parents=True, exist_ok=True)
    ARTIFACT.write_bytes(wasm)
    ARTIFACT_META.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return meta


def stale_reason(rego_dir: Path = SHIPPED_REGO) -> str | None:
    """Why the committed artifact does not serve rego_dir, or None."""
    modules = load_modules(rego_dir)
    meta = shipped_meta()
    if meta is None:
        return f"{ARTIFACT_META} is missing or unreadable"
    if meta.get("modules_digest") != modules_digest(modules):
        return f"{ARTIFACT} was built from other Rego than {rego_dir}"
    if shipped_wasm(modules) is None:
        return f"{ARTIFACT} does not match the digest in {ARTIFACT_META.name}"
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m enforcer.policy.wasm_build",
                                description="Build or check the compiled shipped policy (enforcer/policy/compiled).")
    p.add_argument("--write", action="store_true", help="rebuild the artifact with opa build -t wasm")
    p.add_argument("--check", action="store_true", help="exit 1 when the artifact does not match rego/")
    p.add_argument("--opa", help="opa binary (default: $OPA_BIN, PATH, .cache/opa/bin/opa)")
    p.add_argument("--rego", type=Path, default=SHIPPED_REGO, help="policy directory (default: the repository's)")
    args = p.parse_args(argv)
    try:
        if args.write:
            from enforcer.policy.opa import find_opa_binary

            meta = build_artifact(find_opa_binary(args.opa), args.rego)
            print(f"{ARTIFACT.relative_to(Path.cwd()) if ARTIFACT.is_relative_to(Path.cwd()) else ARTIFACT}: "
                  f"{meta['modules_digest']} (opa {meta['opa_version']})")
        why = stale_reason(args.rego)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if why is not None:
        print(f"compiled policy is stale: {why}; run 'make gen' and commit", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
