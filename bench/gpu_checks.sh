#!/usr/bin/env bash
# The GPU checks in one run, for a lent GPU machine (bench/README.md):
#   BUDGET_S=480 bash bench/gpu_checks.sh [env] [floor] [tests] [compile] [profile] [floor-compiled] [bench]
#   (no part named: all seven, in that order; rnn: the fused recurrence's tests, bench/rnn_compare.py and
#   bench/iteration_variants.py; gpu-tests: the -m gpu tests alone; sweep: every scan-kernel config
#   at every GAE size, bench/gae_lab/gae_sweep.py; tiles: the sweep, also rewriting kernels/gae_tiles.py with its
#   fastest tiles (copied to $OUT); train: `make train`; MODES=off,default: the compile table's modes;
#   SIZES=4096x128,...: the GAE sizes that sweep, tiles and floor run, all twelve by default; tiles keeps the
#   table's other sizes)
# Parts run in the order given, each under a timeout: its own cap, or the budget's remaining seconds if fewer
# (a part left less than its minimum is skipped and says so). Everything printed goes to $OUT/gpu_checks.log;
# JSON results land beside it: gae_floor.json, compile_table.json, profile_breakdown.json, gae_floor_compiled.json,
# bench.json, gae_sweep.json.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/gpu_checks}
mkdir -p "$out"
exec > >(tee -a "$out/gpu_checks.log") 2>&1
budget=${BUDGET_S:-480}
parts=${*:-env floor tests compile profile floor-compiled bench}
cache_root=/tmp/gpu_checks_inductor  # compile_table's per-mode caches; profile and bench reuse reduce-overhead's
export PYTHONUNBUFFERED=1

py=.venv/bin/python rppo=.venv/bin/recurrent-ppo
if [ ! -x $py ]; then
  echo "== setup ($(date -u +%H:%M:%S))"
  # The same script `make train` runs; on a GPU image it reuses the host's CUDA torch offline.
  if bash scripts/setup_venv.sh .venv; then
    touch .venv/.installed  # what make's rule leaves, so the train part's `make train` does not set up again
  else
    echo "== setup: scripts/setup_venv.sh FAILED; installing into the host python3 so the checks still run"
    rm -rf .venv
    python3 -m pip install -q --no-build-isolation --no-deps -e . || exit 1
    py=python3 rppo=recurrent-ppo
  fi
fi
num_envs=${NUM_ENVS:-4096}

# run_part NAME MIN_SECONDS CAP_SECONDS COMMAND...: the command under a timeout of min(cap, budget left).
run_part() {
  local name=$1 min_s=$2 cap_s=$3; shift 3
  local left=$((budget - SECONDS))
  if [ "$left" -lt "$min_s" ]; then
    echo "== $name: skipped, ${left}s of the ${budget}s budget left (needs ${min_s}s)"
    return
  fi
  echo "== $name ($(date -u +%H:%M:%S), ${left}s left)"
  [ "$cap_s" -lt "$left" ] && left=$cap_s
  timeout -k 10 "$left" "$@"
  local rc=$?
  [ "$rc" -eq 124 ] && echo "== $name: TIMED OUT"
  echo "== $name: exit $rc after $((SECONDS - start_s))s"
}

# The reduce-overhead caches that bench/compile_table.py leaves, so profile and bench start warm.
warm_cache=(env "TORCHINDUCTOR_CACHE_DIR=$cache_root/reduce-overhead" "TRITON_CACHE_DIR=$cache_root/reduce-overhead/triton")

for part in $parts; do
  start_s=$SECONDS
  case $part in
    env)     run_part env 5 30 bash -c "nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv;
               nproc; $py -c 'import sys, torch, triton; print(sys.version.split()[0], torch.__version__, torch.version.cuda, triton.__version__)'" ;;
    tests)   run_part tests 60 180 bash -c "$py -m pytest -q -p no:cacheprovider -m gpu tests;
               $py -m pytest -q -p no:cacheprovider tests/test_gae.py" ;;
    gpu-tests) run_part gpu-tests 60 150 bash -c "$py -m pytest -q -p no:cacheprovider -m gpu tests;
               $py -m pytest -q -p no:cacheprovider tests/test_gae.py -k 'float_masks or eager_triton or advantages_only'" ;;
    floor)   run_part floor 30 120 $py bench/gae_lab/gae_floor.py ${SIZES:+--sizes $SIZES} --json "$out/gae_floor.json" ;;
    train)   run_part train 60 240 make train ARGS="--no-progress" ;;  # the README's command, defaults, on CUDA
    # sweep and tiles time the kernel as the trainer launches it: advantages alone (returns=False)
    sweep)   run_part sweep 60 300 $py bench/gae_lab/gae_sweep.py --advantages-only ${SIZES:+--sizes $SIZES} \
               --json "$out/gae_sweep.json" ;;
    tiles)   # the sweep, writing its fastest tile per size as the op's table (after every size): later parts run with it
             run_part tiles 60 300 $py bench/gae_lab/gae_sweep.py --advantages-only ${SIZES:+--sizes $SIZES} \
               --json "$out/gae_sweep.json" --write-tiles kernels/gae_tiles.py
             cp kernels/gae_tiles.py "$out/" ;;
    floor-compiled)  # the compiled torch loop, apart: one inductor compile of a 128-step unrolled loop
             run_part floor-compiled 40 120 $py bench/gae_lab/gae_floor.py --sizes 4096x128 --compile-sizes 4096x128 \
               --json "$out/gae_floor_compiled.json" ;;
    compile) rm -rf "$cache_root"
             run_part compile 90 260 $py bench/compile_table.py --cache-root "$cache_root" --num-envs $num_envs --iterations 4 \
               ${MODES:+--modes $MODES} \
               --json "$out/compile_table.json" ;;
    profile) run_part profile 45 100 "${warm_cache[@]}" $rppo profile --num-envs $num_envs \
               --total-steps $((num_envs * 128 * 4)) --eval-episodes 0 --no-progress --out /tmp/gpu_profile
             [ -f /tmp/gpu_profile/breakdown.json ] && cp /tmp/gpu_profile/breakdown.json "$out/profile_breakdown.json"
             [ -f /tmp/gpu_profile/trace.json ] && gzip -c /tmp/gpu_profile/trace.json > "$out/profile_trace.json.gz" ;;
    bench)   run_part bench 90 600 "${warm_cache[@]}" $py -m pytest bench -q -p no:cacheprovider --benchmark-enable \
               -k "(train_iteration or rollout_step or ppo_step) and not default" --benchmark-json="$out/bench.json" ;;
    rnn)     # the fused recurrence on the GPU: its tests, forward+backward against cuDNN, then the iteration variants
             run_part rnn-tests 60 200 $py -m pytest -q -p no:cacheprovider tests/test_rnn_kernels.py \
               tests/test_rnn_kernel_wiring.py tests/test_rollout_graph.py
             run_part rnn-compare 60 240 $py bench/rnn_compare.py --out "$out/rnn_compare.json"
             run_part variants 90 300 $py bench/iteration_variants.py --num-envs $num_envs --json "$out/variants.json" ;;
    *) echo "unknown part $part"; exit 2 ;;
  esac
done
echo "== done in ${SECONDS}s"
