#!/usr/bin/env bash
# Builds tests/audit/note_verify (a signed-note verifier and signer over Go's
# reference golang.org/x/mod/sumdb/note) and prints the binary's path on the
# last line. The checkpoint tests use it to prove interoperability.
#
# Order of preference: $NOTE_VERIFY_BIN, the cached build in
# .cache/note-verifier/bin/note-verify (reused while main.go is unchanged),
# and only then a fresh build, the way scripts/build-opa.sh builds OPA:
#   1. a private apt state under .cache/note-verifier/apt, so the system's apt
#      is never touched;
#   2. apt-get download of golang-golang-x-mod-dev (the note package imports
#      only the standard library) and the newest golang-1.x toolchain;
#   3. dpkg -x into .cache/note-verifier/root and `go build` in GOPATH mode.
# Only Debian's archive is contacted. About 50 MB, well under a minute.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${AECL_NOTE_VERIFIER_CACHE:-$repo/.cache/note-verifier}
src=$repo/tests/audit/note_verify
force=0
for a in "$@"; do
  case "$a" in
    --force) force=1 ;;
    -h|--help)
      sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
      echo "usage: scripts/build-note-verifier.sh [--force]   (--force: rebuild even if a build exists)"
      exit 0 ;;
    *) echo "build-note-verifier: unknown option $a" >&2; exit 2 ;;
  esac
done
say() { echo "build-note-verifier: $*" >&2; }

works() { [ -x "$1" ] && [ "$("$1" selftest 2>/dev/null)" = ok ]; }
bin=$cache/bin/note-verify
stamp=$cache/bin/note-verify.src
want=$(sha256sum "$src/main.go" | cut -d' ' -f1)

cached() { works "$bin" && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; }

if [ "$force" = 0 ]; then
  if [ -n "${NOTE_VERIFY_BIN:-}" ]; then
    works "$NOTE_VERIFY_BIN" || { say "NOTE_VERIFY_BIN=$NOTE_VERIFY_BIN is not a working note-verify"; exit 1; }
    echo "$NOTE_VERIFY_BIN"; exit 0
  fi
  if cached; then echo "$bin"; exit 0; fi
fi

# One build at a time (test runs may start this concurrently); a run that
# waited reuses what the other one built.
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock -w 900 9 || { say "timed out waiting for another build ($cache/.lock)"; exit 1; }
if [ "$force" = 0 ] && cached; then echo "$bin"; exit 0; fi

. "$repo/scripts/lib/private-apt.sh"
apt=$cache/apt
root=$cache/root
rm -rf "$apt" "$root" "$cache/debs" "$cache/gocache"
mkdir -p "$cache/bin" "$cache/debs" "$root"
private_apt_init "$apt" forky sid

gover=$(newest_go_version)
[ -n "$gover" ] || { say "no golang-1.x-go package found"; exit 1; }
pkgs=(golang-golang-x-mod-dev "golang-$gover-go" "golang-$gover-src")
say "downloading ${pkgs[*]}"
( cd "$cache/debs" && apt-get "${aptopts[@]}" -qq download "${pkgs[@]}" )
for deb in "$cache"/debs/*.deb; do dpkg -x "$deb" "$root"; done

goroot=$root/usr/lib/go-$gover
[ -x "$goroot/bin/go" ] || { say "Go toolchain not found at $goroot"; exit 1; }
[ -f "$root/usr/share/gocode/src/golang.org/x/mod/sumdb/note/note.go" ] \
  || { say "golang-golang-x-mod-dev has no sumdb/note"; exit 1; }
say "building note-verify with go $gover (GOPATH mode)"
( cd "$src" && GOROOT=$goroot GOPATH=$root/usr/share/gocode GO111MODULE=off CGO_ENABLED=0 GOFLAGS= \
    GOTOOLCHAIN=local GOCACHE=$cache/gocache GOPROXY=off \
    "$goroot/bin/go" build -trimpath -o "$bin.new" . )
mv "$bin.new" "$bin"
works "$bin" || { say "built binary fails its selftest"; exit 1; }
echo "$want" > "$stamp"
# The unpacked tree and lists are only needed for the build.
rm -rf "$root" "$apt" "$cache/debs" "$cache/gocache"
echo "$bin"
