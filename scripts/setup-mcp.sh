#!/usr/bin/env bash
# Installs the third-party MCP servers the MCP gateway's tests and demo run
# (the exact versions below) with npm into .cache/node/mcp, idempotently:
# nothing is fetched when they are already there. Prints the node_modules
# path. Needs node (18 or newer) and npm.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
say() { echo "setup-mcp: $*" >&2; }
case "${1:-}" in
  "") ;;
  -h|--help) sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'; echo "usage: scripts/setup-mcp.sh"; exit 0 ;;
  *) say "unknown option $1"; exit 2 ;;
esac

packages=(
  @modelcontextprotocol/server-filesystem@2026.8.31
  @modelcontextprotocol/server-everything@2026.8.31
)
prefix=.cache/node/mcp

command -v node >/dev/null || {
  say "node is not installed: install Node.js 18 or newer (Debian: apt-get install nodejs npm; scripts/setup.sh --dev does)"
  exit 1
}
major=$(node -p 'process.versions.node.split(".")[0]')
[ "$major" -ge 18 ] || { say "node $(node --version) is too old: the MCP servers need Node.js 18 or newer"; exit 1; }

# The "name@version" of every pinned package not installed at exactly that version.
missing() {
  node -e '
    const fs = require("fs"), path = require("path");
    const [prefix, ...wanted] = process.argv.slice(1);
    for (const spec of wanted) {
      const at = spec.lastIndexOf("@"), name = spec.slice(0, at), version = spec.slice(at + 1);
      let have = null;
      try { have = JSON.parse(fs.readFileSync(path.join(prefix, "node_modules", name, "package.json"), "utf8")).version; } catch {}
      if (have !== version) console.log(spec);
    }' "$prefix" "${packages[@]}"
}

want=$(missing)
if [ -n "$want" ]; then
  command -v npm >/dev/null || {
    say "npm is not installed (Debian: apt-get install npm; scripts/setup.sh --dev does)"
    exit 1
  }
  mkdir -p "$prefix"
  # shellcheck disable=SC2086  # one word per package
  say "installing from npm into $prefix: $(echo $want)"
  # shellcheck disable=SC2086
  npm install --silent --no-audit --no-fund --save-exact --prefix "$prefix" $want >/dev/null
  left=$(missing)
  [ -z "$left" ] || { say "npm did not install: $(echo $left)"; exit 1; }
fi
echo "$repo/$prefix/node_modules"
