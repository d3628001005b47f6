#!/usr/bin/env bash
# The GPU checks of issues 3-5 in one run, for a lent GPU machine (bench/README.md):
#   bash bench/gpu_checks.sh [tests] [floor] [compile] [bench]     (no argument: all four)
# Writes logs under ${OUT:-/tmp/gpu_checks}. Each part prints a short table or a pytest summary.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/gpu_checks}
mkdir -p "$out"
parts=${*:-tests floor compile bench}
[ -x .venv/bin/python ] || bash scripts/setup_venv.sh .venv > "$out/setup.log" 2>&1 || { cat "$out/setup.log"; exit 1; }
py=.venv/bin/python
export PYTHONUNBUFFERED=1
for part in $parts; do
  echo "== $part ($(date -u +%H:%M:%S))"
  case $part in
    tests)   $py -m pytest -q -x -m gpu tests 2>&1 | tee "$out/gpu_tests.log" | tail -15
             $py -m pytest -q -x tests/test_gae.py 2>&1 | tee "$out/gae_tests.log" | tail -3 ;;
    floor)   $py bench/gae_floor.py --json "$out/gae_floor.json" 2>&1 | tee "$out/gae_floor.log" ;;
    compile) $py bench/compile_table.py 2>&1 | tee "$out/compile_table.log" ;;
    bench)   $py -m pytest bench -q -p no:cacheprovider --benchmark-enable -k "not gae" \
               --benchmark-json="$out/bench.json" 2>&1 | tee "$out/bench.log" | tail -30 ;;
    *) echo "unknown part $part"; exit 2 ;;
  esac
done
