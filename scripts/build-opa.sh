#!/usr/bin/env bash
# Builds the `opa` binary from Debian's archive and prints its path (last line).
#
# Order of preference: $OPA_BIN, an `opa` on PATH, the cached build in
# .cache/opa/bin/opa, and only then a fresh build:
#   1. a private apt state under .cache/opa/apt (own sources list, lists,
#      archives and an empty dpkg status), so the system's apt is never touched;
#   2. apt-get download of OPA's Go source (golang-github-open-policy-agent-opa-dev,
#      in forky/sid), every golang-* package it imports, and a Go toolchain;
#      tablewriter comes from trixie because sid's 1.x breaks OPA's build;
#   3. dpkg -x into .cache/opa/root and `go build` in GOPATH mode.
# Only Debian's archive is contacted. About 100 MB, a minute or two on 2 cores.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${AECL_OPA_CACHE:-$repo/.cache/opa}
force=0
for a in "$@"; do
  case "$a" in
    --force) force=1 ;;
    -h|--help)
      sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
      echo "usage: scripts/build-opa.sh [--force]   (--force: rebuild even if an opa exists)"
      exit 0 ;;
    *) echo "build-opa: unknown option $a" >&2; exit 2 ;;
  esac
done
started=$(date +%s)
# Progress goes to stderr, each line with the seconds since the start; stdout
# carries only the binary's path.
say() { echo "build-opa: [$(( $(date +%s) - started ))s] $*" >&2; }

works() { [ -x "$1" ] && "$1" version >/dev/null 2>&1; }

if [ "$force" = 0 ]; then
  if [ -n "${OPA_BIN:-}" ]; then
    works "$OPA_BIN" || { say "OPA_BIN=$OPA_BIN is not a working opa binary"; exit 1; }
    echo "$OPA_BIN"; exit 0
  fi
  if onpath=$(command -v opa 2>/dev/null) && works "$onpath"; then echo "$onpath"; exit 0; fi
  if works "$cache/bin/opa"; then echo "$cache/bin/opa"; exit 0; fi
fi

say "building opa from Debian's source packages (a few minutes on 2 cores, once: cached in $cache)"
say "step 1/4: reading Debian's package lists (private apt state under $cache/apt)"
. "$repo/scripts/lib/private-apt.sh"
apt=$cache/apt
rm -rf "$apt" "$cache/root" "$cache/debs"
mkdir -p "$apt/etc/preferences.d" "$cache/bin" "$cache/debs"
# Pin the one package whose newest version breaks OPA's build.
cat > "$apt/etc/preferences.d/tablewriter" <<'PIN'
Package: golang-github-olekukonko-tablewriter-dev
Pin: release n=trixie
Pin-Priority: 1001
PIN
private_apt_init "$apt" forky sid trixie
nopin=("${aptopts[@]}" -o "Dir::Etc::PreferencesParts=/nonexistent")

# The newest Go toolchain the archive offers.
gover=$(newest_go_version)
[ -n "$gover" ] || { say "no golang-1.x-go package found"; exit 1; }
say "Go toolchain: golang-$gover-go"

fetch_and_unpack() {  # $@: package names
  rm -rf "$root" "$cache/debs"; mkdir -p "$root" "$cache/debs"
  say "step 2/4: downloading $# packages from Debian's archive"
  ( cd "$cache/debs" && apt-get "${aptopts[@]}" -qq download "$@" )
  say "downloaded $(du -sm "$cache/debs" | cut -f1) MB; step 3/4: unpacking them"
  local n=0 total
  total=$(ls "$cache"/debs/*.deb | wc -l)
  for deb in "$cache"/debs/*.deb; do
    dpkg -x "$deb" "$root"
    n=$((n + 1))
    [ $((n % 20)) = 0 ] && say "unpacked $n/$total packages"
  done
  say "unpacked $total/$total packages"
}

go_build() {
  # -v names each package as it is compiled: counted into a progress line every 50.
  GOROOT=$goroot GOPATH=$root/usr/share/gocode GO111MODULE=off CGO_ENABLED=0 GOFLAGS= \
    GOTOOLCHAIN=local GOCACHE=$cache/gocache GOPROXY=off \
    "$goroot/bin/go" build -v -trimpath -o "$cache/bin/opa.new" github.com/open-policy-agent/opa 2>&1 \
    | { n=0; while IFS= read -r line; do
          case "$line" in
            *.go:*|"# "*) echo "$line" >&2 ;;  # a compile error, and the package it is in
            *) n=$((n + 1)); [ $((n % 50)) = 0 ] && say "compiled $n Go packages" ;;
          esac
        done; say "compiled $n Go packages"; }
  return "${PIPESTATUS[0]}"
}

root=$cache/root
goroot=$root/usr/lib/go-$gover
toolchain="golang-$gover-go golang-$gover-src"

# First try: exactly the packages OPA's code imports (about 70, 100 MB).
fetch_and_unpack $(grep -v '^#' "$repo/scripts/opa-packages.txt") $toolchain
[ -x "$goroot/bin/go" ] || { say "Go toolchain not found at $goroot"; exit 1; }
say "step 4/4: building opa with go $gover (GOPATH mode, about 700 packages)"
if ! go_build; then
  # The archive moved on; let apt resolve the whole closure (about 440 packages).
  # Resolution runs without the tablewriter pin (its dependents declare >= 1.0
  # for code OPA never imports); the download then applies the pin.
  say "build with the known package list failed; retrying with the full dependency closure"
  full=$(apt-get "${nopin[@]}" install -s --no-install-recommends \
           golang-github-open-policy-agent-opa-dev $toolchain 2>/dev/null \
         | awk '$1 == "Inst" && $2 ~ /^golang-/ {print $2}')
  [ -n "$full" ] || { say "apt could not resolve OPA's dependencies"; exit 1; }
  fetch_and_unpack $full
  go_build
fi
mv "$cache/bin/opa.new" "$cache/bin/opa"
works "$cache/bin/opa" || { say "built binary does not run"; exit 1; }
say "built $("$cache/bin/opa" version | head -n1)"
# The unpacked tree and lists are only needed for the build.
rm -rf "$root" "$apt" "$cache/debs" "$cache/gocache"
echo "$cache/bin/opa"
