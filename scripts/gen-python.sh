#!/usr/bin/env bash
# Generates the Python stubs for proto/weft/v1 into examples/python/weft_gen/ (gitignored:
# generated code is generated, never committed). Uses grpc_tools.protoc (Debian's
# python3-grpc-tools, or `pip install grpcio-tools`), which bundles google/protobuf/*.proto.
#
# The stubs import each other as `weft.v1.<name>_pb2`, so put examples/python/weft_gen on
# sys.path (the example and the tests do) and `from weft.v1 import mesh_pb2, mesh_pb2_grpc`.
#
#   scripts/gen-python.sh                 # or: npm run gen:python
#   WEFT_PYTHON=python3 scripts/gen-python.sh   # another interpreter (default /usr/bin/python3)
set -euo pipefail
cd "$(dirname "$0")/.."

python=${WEFT_PYTHON:-/usr/bin/python3}
out=examples/python/weft_gen

if ! include=$("$python" -c 'import os, grpc_tools; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))' 2>/dev/null); then
  echo "gen-python: $python cannot import grpc_tools." >&2
  echo "  Install it: apt-get install python3-grpc-tools (Debian), or pip install grpcio-tools;" >&2
  echo "  or point WEFT_PYTHON at an interpreter that has it." >&2
  exit 1
fi

# Generate into a fresh folder and swap it in, so a reader never sees half a package.
tmp=$(mktemp -d "examples/python/.weft_gen.XXXXXX")
chmod 755 "$tmp"
trap 'rm -rf "$tmp"' EXIT
"$python" -m grpc_tools.protoc -I proto -I "$include" \
  --python_out="$tmp" --grpc_python_out="$tmp" \
  proto/weft/v1/*.proto
rm -rf "$out"
mv "$tmp" "$out"
echo "gen-python: wrote $(find "$out" -name '*.py' | wc -l) files to $out (import weft.v1.*_pb2 with $out on sys.path)"
