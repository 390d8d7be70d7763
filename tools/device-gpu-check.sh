#!/usr/bin/env bash
# On a bare GPU node that has torch and JAX but no registry: unpack the site built by
# tools/device-site.sh, run tools/gpu-check.sh from this checkout (no report: that node has no
# plotly), and pack the results as one file for the machine that makes the report:
#   tools/device-gpu-check.sh .devicesite/site.zip RESULTS.tgz
set -euo pipefail
zip=${1:?usage: device-gpu-check.sh SITE.zip RESULTS.tgz}
tgz=${2:?usage: device-gpu-check.sh SITE.zip RESULTS.tgz}
site=$(mktemp -d)
python3 -c "import zipfile,sys; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" "$zip" "$site"
chmod +x "$site"/ray/core/src/ray/gcs/gcs_server "$site"/ray/core/src/ray/raylet/raylet
export PYTHONPATH="$site:$(pwd)${PYTHONPATH:+:$PYTHONPATH}" RAY_AUTH_MODE=disabled
export DEEPERBENCH="python3 -m harness"
status=0
tools/gpu-check.sh --no-report runs/gpu-check || status=$?
tar czf "$tgz" runs/gpu-check
exit $status
