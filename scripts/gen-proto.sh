#!/usr/bin/env bash
# Regenerates the Python gRPC code from proto/ into enforcer/_gen/.
# Generated code is committed; `make gen-check` fails if it is stale.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$repo/.venv/bin/python}
out=$repo/enforcer/_gen
rm -rf "$out"
mkdir -p "$out"
"$py" -m grpc_tools.protoc -I "$repo/proto" \
  --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
  "$repo/proto/aecl/v1/enforcer.proto"
# protoc emits absolute imports (`from aecl.v1 import ...`); the generated tree
# lives inside our package, so rewrite them to the package path.
sed -i 's/^from aecl\.v1 import/from enforcer._gen.aecl.v1 import/' "$out/aecl/v1/enforcer_pb2_grpc.py"
for d in "$out" "$out/aecl" "$out/aecl/v1"; do
  printf '"""Generated from proto/ by scripts/gen-proto.sh. Do not edit."""\n' > "$d/__init__.py"
done
