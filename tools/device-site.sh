#!/usr/bin/env bash
# The Python packages a bare GPU node lacks for `tools/gpu-check.sh`, as one zip to carry there:
# Ray 2.60 (without its Java jar) and pydantic with their dependencies, for CPython 3.12 on x86-64
# (about 48 MB). Run on a machine that reaches PyPI:
#   tools/device-site.sh .devicesite          # then carry .devicesite to the GPU node
# On the node, tools/device-gpu-check.sh unpacks it and runs the check.
set -euo pipefail
dir=${1:?usage: device-site.sh DIR}
mkdir -p "$dir"; dir=$(cd "$dir" && pwd)
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
  -d "$tmp/w" ray==2.60.0 jsonschema jsonschema-specifications referencing rpds-py \
  pydantic pydantic-core annotated-types typing-inspection
mkdir -p "$tmp/site"
for w in "$tmp"/w/*.whl; do python3 -c "import zipfile,sys; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" "$w" "$tmp/site"; done
rm -rf "$tmp/site/ray/jars"
find "$tmp/site" -name '*.js.map' -delete
(cd "$tmp/site" && python3 -c "
import os, zipfile
with zipfile.ZipFile('$dir/site.zip', 'w', zipfile.ZIP_DEFLATED) as z:
    for root, _, files in os.walk('.'):
        for f in files: z.write(os.path.join(root, f))
")
ls -la "$dir/site.zip"
