#!/usr/bin/env bash
# Installs the Node.js client example's npm packages (the exact versions in
# examples/clients/node/package.json) into .cache/node, idempotently: nothing
# is fetched when they are already there. Needs node (18 or newer) and npm.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
say() { echo "setup-node: $*" >&2; }
case "${1:-}" in
  "") ;;
  -h|--help) sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//'; echo "usage: scripts/setup-node.sh"; exit 0 ;;
  *) say "unknown option $1"; exit 2 ;;
esac

command -v node >/dev/null || {
  say "node is not installed: install Node.js 18 or newer (Debian: apt-get install nodejs npm; scripts/setup.sh --dev does)"
  exit 1
}
major=$(node -p 'process.versions.node.split(".")[0]')
[ "$major" -ge 18 ] || { say "node $(node --version) is too old: the client needs Node.js 18 or newer"; exit 1; }

manifest=examples/clients/node/package.json
prefix=.cache/node
# The "name@version" of every pinned package not installed at exactly that version.
missing() {
  node -e '
    const fs = require("fs"), path = require("path");
    const [manifest, prefix] = process.argv.slice(1);
    const deps = JSON.parse(fs.readFileSync(manifest, "utf8")).dependencies;
    for (const [name, version] of Object.entries(deps)) {
      let have = null;
      try { have = JSON.parse(fs.readFileSync(path.join(prefix, "node_modules", name, "package.json"), "utf8")).version; } catch {}
      if (have !== version) console.log(`${name}@${version}`);
    }' "$manifest" "$prefix"
}

want=$(missing)
[ -z "$want" ] && exit 0
command -v npm >/dev/null || {
  say "npm is not installed (Debian: apt-get install npm; scripts/setup.sh --dev does)"
  exit 1
}
# shellcheck disable=SC2086  # one word per package
say "installing from npm into $prefix: $(echo $want)"
# shellcheck disable=SC2086
npm install --silent --no-audit --no-fund --save-exact --prefix "$prefix" $want >/dev/null
left=$(missing)
[ -z "$left" ] || { say "npm did not install: $(echo $left)"; exit 1; }
