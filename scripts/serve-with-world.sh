#!/usr/bin/env bash
# `make run`: the example world (examples/world: payments, records, config,
# webhooks, mail on 127.0.0.1:18401-18405, data under var/world) beside
# `aecl serve`, started first (the payments connector reads the key the world
# creates) and stopped with it.
#   scripts/serve-with-world.sh [aecl serve options...]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
case "${1:-}" in
  -h|--help) sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
py=.venv/bin/python
world_dir=${AECL_WORLD_DIR:-var/world}
ports=$world_dir/world.json
mkdir -p "$world_dir"
rm -f "$ports"
"$py" examples/world/serve.py --dir "$world_dir" --base-port "${AECL_WORLD_PORT:-18401}" --ports-file "$ports" >/dev/null &
world=$!
stop_world() { kill "$world" 2>/dev/null || true; wait "$world" 2>/dev/null || true; }
trap stop_world EXIT
for _ in $(seq 200); do
  [ -s "$ports" ] && break
  kill -0 "$world" 2>/dev/null || { echo "serve-with-world: the example world did not start (ports in use? AECL_WORLD_PORT=N moves them)" >&2; exit 1; }
  sleep 0.05
done
[ -s "$ports" ] || { echo "serve-with-world: the example world is not ready after 10s" >&2; exit 1; }
echo "example world: $(tr -d '\n' < "$ports")"
# The service in the background and waited for, not exec'd and not in the
# foreground: a TERM or INT sent to this script alone (kill, a supervisor)
# must reach the service too, and bash runs no trap while a foreground child runs.
.venv/bin/aecl serve "$@" &
svc=$!
stop_all() { kill -TERM "$svc" 2>/dev/null || true; wait "$svc" 2>/dev/null || true; stop_world; }
trap 'stop_all; exit 143' TERM
trap 'stop_all; exit 130' INT
status=0
wait "$svc" || status=$?
stop_world
exit "$status"
