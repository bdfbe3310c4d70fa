#!/usr/bin/env bash
# Installs what AECL needs on a fresh Debian machine, idempotently:
#   .venv with the Python dependencies (PyPI), bubblewrap (Debian), and, with
#   --dev, buf and the Node client's gRPC packages (npm), the OPA binary (built
#   from Debian packages) and Chromium (Debian).
# Nothing is downloaded from anywhere but PyPI, Debian's archive and npm.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
dev=0
for a in "$@"; do
  case "$a" in
    --dev) dev=1 ;;
    -h|--help) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; echo "usage: scripts/setup.sh [--dev]"; exit 0 ;;
    *) echo "setup: unknown option $a" >&2; exit 2 ;;
  esac
done
say() { echo "setup: $*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    say "need root for: $*"; exit 1; fi
}

apt_install() {
  say "installing Debian packages: $*"
  if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -print -quit 2>/dev/null)" ]; then
    as_root apt-get update -qq
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null \
    || { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null; }
}

# 1. bubblewrap: the sandbox. The service refuses to start without it.
command -v bwrap >/dev/null || apt_install bubblewrap
# libseccomp: the sandbox's seccomp filter is compiled with it (via pyseccomp).
ldconfig -p 2>/dev/null | grep 'libseccomp\.so\.2' >/dev/null || apt_install libseccomp2

# 2. Python virtual environment.
py=${PYTHON:-python3}
extras=""
[ "$dev" = 1 ] && extras="[dev]"
stamp=.venv/.aecl-installed
hash=$(sha256sum pyproject.toml | cut -c1-16)
have=$(cat "$stamp" 2>/dev/null || true)
if [ ! -x .venv/bin/python ] || { [ "$have" != "$hash[dev]" ] && [ "$have" != "$hash$extras" ]; }; then
  [ -x .venv/bin/python ] || { say "creating .venv"; "$py" -m venv .venv; }
  say "installing Python dependencies into .venv"
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".$extras" 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -c "import enforcer, grpc, wasmtime, pyseto, mcp" || { say "Python install failed"; exit 1; }
  echo "$hash$extras" > "$stamp"
fi

# 2b. node (Debian's) and the MCP servers the demo config's MCP front end runs
# (@modelcontextprotocol/server-filesystem, pinned, from npm into .cache/node/mcp).
{ command -v node >/dev/null && command -v npm >/dev/null; } || apt_install nodejs npm
scripts/setup-mcp.sh >/dev/null

[ "$dev" = 1 ] || exit 0

# 3. buf (lint and breaking checks of the gRPC API), from npm.
buf_version=1.75.0
if [ "$(.cache/node/node_modules/.bin/buf --version 2>/dev/null)" != "$buf_version" ]; then
  command -v npm >/dev/null || apt_install npm
  say "installing buf $buf_version from npm"
  npm install --silent --no-audit --no-fund --prefix .cache/node "@bufbuild/buf@$buf_version" >/dev/null
fi

# 3b. node (Debian's, when the machine has none) and the Node.js client example's
# gRPC packages from npm, for tests/clients.
{ command -v node >/dev/null && command -v npm >/dev/null; } || apt_install nodejs npm
scripts/setup-node.sh

# 4. OPA, built from Debian's source packages (cached).
scripts/build-opa.sh >/dev/null

# 5. Go's reference signed-note verifier, for the checkpoint interop tests (cached).
scripts/build-note-verifier.sh >/dev/null

# 6. Chromium (Debian's), for the HTML audit report's test in a real headless browser.
[ -x /usr/bin/chromium ] || apt_install chromium
