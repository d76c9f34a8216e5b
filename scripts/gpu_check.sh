#!/usr/bin/env bash
# The device check of the GPU path (issue 27 item 6), one command of under 10 minutes on an H100 / H200.
# NOT YET RUN ON A GPU: every step runs in CI on MuJoCo Warp's CPU device at toy sizes (tests/bench/test_gpu_check.py,
# tests/run/test_gpu_config.py); this script is what a lent GPU confirms.
#
#   scripts/gpu_check.sh fetch   here, with network: download the wheels the device image lacks into .whl/
#                                (Python 3.12, manylinux x86-64; the image already has torch, lightning, rich, ...)
#   scripts/gpu_check.sh rehearse  here, without a GPU: every step below at toy sizes on Warp's CPU device (~3 min),
#                                to catch a broken step before device time is spent on it
#   scripts/gpu_check.sh run     on the device machine (carry .whl): install them, then, most important first,
#     1. sync: collection of configs/phc_gpu.yaml at 4096 envs under torch.cuda.set_sync_debug_mode: the step path
#        (policy, env step, resets) under "error" must not sync at all; whole collections under "warn" may sync only
#        after their loop (scripts/gpu_check.py sync). Warp compiles its kernels for the GPU here (~1-2 min).
#     2. fit: 3 minutes of phc fit of configs/phc_gpu.yaml, evaluating and resampling every 5 iterations (so the
#        MotionResampling draw of REVIEW 1 runs on CUDA) and checkpointing; end-to-end SPS in fit.log.
#     3. bench env: env-only env-steps/s at 1024 and 4096 envs, physics vs task.
#     4. bench train: training env-steps/s of configs/phc_gpu.yaml at 1024 and 4096 envs, where the time goes.
#     5. bench scale: load time, library bytes and peak memory of an AMASS-sized set (11,000 motions, ~40 h) with
#        the GPU config at 4096 envs (phc bench scale; generating the file takes ~2 min of the time left).
#   Logs land in $OUT (or runs/gpu_check): gpu.txt, sync.log, fit.log, bench_env.log, bench_train_*.log,
#   bench_scale.log, summary.txt. Each step's timeout is capped by a 570 s deadline for the whole run; a step that
#   does not fit is reported as skipped. Exit status: 1 when the sync check or the fit failed.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "fetch" ]; then
  echo /.whl/ >> .git/info/exclude
  plat=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any)
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${plat[@]}" -d .whl \
    mujoco==4.0.0 mujoco-core mujoco-studio glfw pyopengl mujoco-warp==4.0.0 warp-lang==1.19.0 \
    jsonargparse==4.53.0 docstring-parser typeshed-client wandb tensorboard
  du -sh .whl
  exit 0
fi

mode=${1:-run}
if [ "$mode" != run ] && [ "$mode" != rehearse ]; then echo "usage: $0 fetch|run|rehearse" >&2; exit 2; fi
out="${OUT:-runs/gpu_check}"
mkdir -p "$out"
if [ "$mode" = run ]; then
  envs=(1024 4096) big=4096 fit_time=00:00:03:00 sync_args=() toy=() scale=(--config configs/phc_gpu.yaml)
else  # the same commands at toy sizes on the CPU
  envs=(4 8) big=4 fit_time=00:00:00:20 sync_args=(--device cpu --horizon 4 --small --steps 4)
  toy=(--trainer.accelerator cpu --data.device cpu --data.horizon 8 --data.num_minibatches 2
       --model.actor_hidden "[32, 32]" --model.critic_hidden "[32, 32]")
  scale=(--config configs/phc.yaml --motions 200 --hours 0.5)  # the set's code path; Warp's CPU device is too slow
fi
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" WARP_CACHE_PATH="$PWD/.warp_cache"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site" || exit 1
fi
phc=(python3 -m phc_lightning.cli)  # the phc command of this checkout (an array: `timeout` needs a program)
deadline=570
status=0
# step NAME BUDGET_S LOG CMD...: run CMD with a timeout of min(BUDGET_S, time left), output to LOG and the console
step() {
  local name=$1 budget=$2 log=$3; shift 3
  local left=$(( deadline - SECONDS ))
  if [ "$left" -lt 20 ]; then echo "$name: SKIPPED (no time left)" | tee -a "$out/summary.txt"; return 0; fi
  [ "$budget" -gt "$left" ] && budget=$left
  local start=$SECONDS
  timeout "$budget" "$@" > >(tee "$log") 2>&1
  local rc=$?
  echo "$name: rc=$rc in $(( SECONDS - start )) s (limit $budget s)" | tee -a "$out/summary.txt"
  return $rc
}
: > "$out/summary.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$out/gpu.txt"
python3 -c 'import torch, warp, mujoco_warp; print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
"warp", warp.__version__, "mujoco_warp", mujoco_warp.__version__)' | tee -a "$out/gpu.txt"

# 1. no host sync on the step path (also compiles Warp's kernels for the GPU, into $WARP_CACHE_PATH)
step sync 170 "$out/sync.log" python3 scripts/gpu_check.py sync --num_envs "$big" "${sync_args[@]}" || status=1
grep -E "^(PASS|FAIL)" "$out/sync.log" | tail -1 | sed 's/^/sync check: /' >> "$out/summary.txt"

# 2. 3 minutes of the GPU config through evaluations, resamplings and checkpoints (the trainer stops at max_time)
python3 scripts/gpu_check.py fit-config "$out/phc_gpu_check.yaml" --every 5
step fit 240 "$out/fit.log" "${phc[@]}" fit --config "$out/phc_gpu_check.yaml" --trainer.max_time "$fit_time" \
  --trainer.default_root_dir "$out/fit" --data.num_envs "$big" "${toy[@]}" || status=1
ls "$out"/fit/version_0/eval "$out"/fit/version_0/checkpoints >> "$out/summary.txt" 2>&1

# 3. env-only SPS at puffer-phc scale
step bench_env 70 "$out/bench_env.log" "${phc[@]}" bench env --backend warp --num_envs "${envs[@]}" --steps 60 \
  --repeats 2

# 4. training SPS and where an iteration's time goes (the first of 4 iterations is not measured)
for n in "${envs[@]}"; do
  step "bench_train_$n" 60 "$out/bench_train_$n.log" "${phc[@]}" bench train --config configs/phc_gpu.yaml --epochs 4 \
    --data.num_envs "$n" "${toy[@]}"
done

# 5. library memory of an AMASS-sized set with the GPU config (the last step: it gets the time left)
step bench_scale 570 "$out/bench_scale.log" "${phc[@]}" bench scale "${scale[@]}" --num_envs "$big" \
  --motion_file "$out/amass_sized.npz" --out "$out/bench_scale.json"
cat "$out/summary.txt"
exit $status
