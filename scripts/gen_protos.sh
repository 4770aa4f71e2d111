#!/usr/bin/env bash
# Regenerates lifebox/v1/*_pb2*.py from protos/. The package imports as generated
# (`from lifebox.v1 import common_pb2`): lifebox/ ships beside lifebox_grpc/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
export PATH="$(dirname "$PY"):$PATH"
out=${1:-.}
mkdir -p "$out/lifebox/v1"
rm -f "$out"/lifebox/v1/*_pb2*.py "$out"/lifebox/v1/*_pb2*.pyi
"$PY" -m grpc_tools.protoc -Iprotos \
  --python_out="$out" --grpc_python_out="$out" --mypy_out="$out" --mypy_grpc_out="$out" \
  protos/lifebox/v1/*.proto
for init in "$out/lifebox/__init__.py" "$out/lifebox/v1/__init__.py"; do
  [ -f "$init" ] || echo '"""Generated from protos/lifebox/v1: do not edit."""' > "$init"
done
