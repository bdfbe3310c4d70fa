# Sourced by the scripts that build Go programs from Debian's archive
# (build-opa.sh, build-note-verifier.sh). A private apt state under a cache
# directory: its own sources list, package lists, archives and an empty dpkg
# status, so the system's apt configuration is never read or touched.
#
#   private_apt_init DIR SUITE...   sets the array `aptopts` and fetches lists
#   newest_go_version               the newest golang-1.x the lists offer
#
# Preferences (pins) may be dropped into DIR/etc/preferences.d before the
# lists are fetched; the caller defines say().

private_apt_init() {
  local apt=$1; shift
  local mirror=${AECL_DEBIAN_MIRROR:-http://deb.debian.org/debian}
  local keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  [ -r "$keyring" ] || { say "missing $keyring (Debian package debian-archive-keyring)"; exit 1; }
  mkdir -p "$apt/lists/partial" "$apt/archives/partial" "$apt/etc/preferences.d"
  : > "$apt/status"
  : > "$apt/etc/sources.list"
  local suite
  for suite in "$@"; do
    echo "deb [signed-by=$keyring] $mirror $suite main" >> "$apt/etc/sources.list"
  done
  aptopts=(
    -o "Dir::Etc::SourceList=$apt/etc/sources.list"
    -o "Dir::Etc::SourceParts=/nonexistent"
    -o "Dir::Etc::Preferences=/nonexistent"
    -o "Dir::Etc::PreferencesParts=$apt/etc/preferences.d"
    -o "Dir::State=$apt"
    -o "Dir::State::Lists=$apt/lists"
    -o "Dir::State::status=$apt/status"
    -o "Dir::Cache=$apt"
    -o "Dir::Cache::archives=$apt/archives"
    -o "APT::Architecture=$(dpkg --print-architecture)"
    -o "APT::Get::List-Cleanup=0"
    -o "Debug::NoLocking=1"
    -o "Acquire::Languages=none"
    -o "APT::Sandbox::User=$(id -un)"
  )
  say "fetching package lists ($*) into $apt"
  apt-get "${aptopts[@]}" -qq update
}

newest_go_version() {
  apt-cache "${aptopts[@]}" pkgnames golang-1. | sed -n 's/^golang-\(1\.[0-9]*\)-go$/\1/p' | sort -t. -k2 -n | tail -n1
}
