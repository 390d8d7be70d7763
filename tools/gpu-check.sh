#!/usr/bin/env bash
# One GPU check: every workload's smoke sweep in torch and JAX on device cuda, then the report.
# Exits non-zero if the GPU cannot run the sweep (`deeperbench doctor`) or any trial is not ok.
#   tools/gpu-check.sh [--dry-run] [--no-report] [OUT]      (default OUT: runs/gpu-check)
# --dry-run: plan the trials and print what doctor finds, start nothing, write nothing (CPU test).
# --no-report: leave the report to another machine (one without plotly, such as a bare GPU node).
# DEEPERBENCH names the command (default: deeperbench; `python3 -m harness` from a checkout).
set -euo pipefail
dry=0 report=1
while [[ $# -gt 0 && $1 == --* ]]; do
  case $1 in
    --dry-run) dry=1 ;;
    --no-report) report=0 ;;
    *) echo "gpu-check: unknown option $1; allowed: --dry-run, --no-report" >&2; exit 2 ;;
  esac
  shift
done
out=${1:-runs/gpu-check}
db=${DEEPERBENCH:-deeperbench}
spec=sweeps/smoke.yaml
if [[ $dry == 1 ]]; then
  $db doctor "$spec" --device cuda || true
  exec $db run "$spec" --device cuda --out "$out" --dry-run
fi
$db doctor "$spec" --device cuda
$db run "$spec" --device cuda --out "$out"
if [[ $report == 1 ]]; then $db report "$out"; fi
