"""A policy set as a standard OPA bundle (.tar.gz).

The bundle holds the non-test Rego modules under their paths relative to the
policy directory, the whole data document as /data.json, and a /.manifest
whose revision is the policy set's revision. A fleet of OPA sidecars loads it
through OPA's bundle plugin; the service then checks that the revision the
sidecar activated is the one it compiled itself (enforcer.policy.opa).

The archive is deterministic: sorted members, mtime 0, uid/gid 0, no owner
names, gzip header mtime 0. The same policy set always gives the same bytes.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import tarfile
from pathlib import Path
from typing import Any

from enforcer.errors import ConfigError
from enforcer.policy.policyset import DATA_ROOT, PolicySet

MANIFEST = ".manifest"
REGO_VERSION = 1
_PACKAGE = re.compile(r"^package\s+([A-Za-z_][A-Za-z0-9_]*)", re.MULTILINE)


def bundle_roots(policy_set: PolicySet) -> list[str]:
    """The paths the bundle owns: data.aecl (the policy and AECL's config),
    every top-level key of the operator's data, every top-level package."""
    roots = {DATA_ROOT[0], *policy_set.data}
    for source in policy_set.modules.values():
        roots.update(_PACKAGE.findall(source))
    return sorted(roots)


def _json(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def bundle_files(policy_set: PolicySet) -> dict[str, bytes]:
    """Member name (without leading slash) -> content."""
    files = {
        MANIFEST: _json({"revision": policy_set.revision, "roots": bundle_roots(policy_set),
                         "rego_version": REGO_VERSION}),
        "data.json": _json(policy_set.data),
    }
    for path, source in policy_set.modules.items():
        files[Path(path).as_posix()] = source.encode()
    return files


def build_bundle(policy_set: PolicySet, out: Path) -> Path:
    """Write policy_set as an OPA bundle to `out`; return the path written."""
    out = Path(out)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, content in sorted(bundle_files(policy_set).items()):
            info = tarfile.TarInfo("/" + name)
            info.size = len(content)
            info.mtime = 0
            info.mode = 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(content))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "wb") as f, gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0) as gz:
        gz.write(raw.getvalue())
    tmp.replace(out)  # a sidecar polling the file never sees half a bundle
    return out


def read_bundle_revision(path: Path) -> str:
    """The revision in a bundle's /.manifest."""
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            for member in tar.getmembers():
                if member.name.lstrip("/") == MANIFEST and member.isfile():
                    f = tar.extractfile(member)
                    manifest = json.loads(f.read()) if f else None
                    break
            else:
                raise ConfigError(f"{path}: not an OPA bundle (no {MANIFEST})")
    except (OSError, tarfile.TarError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: cannot read bundle: {e}") from e
    revision = manifest.get("revision") if isinstance(manifest, dict) else None
    if not isinstance(revision, str) or not revision:
        raise ConfigError(f"{path}: bundle manifest has no revision")
    return revision
