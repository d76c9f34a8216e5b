#!/usr/bin/env bash
# GPU check of the MuJoCo Warp path (issue 9), sized for one device run of ~8 minutes on an H100/H200.
#
#   scripts/gpu_check.sh fetch   here, with network: download the wheels the device image lacks into .whl/
#                                (Python 3.12, manylinux x86-64; the image already has torch, lightning, rich, ...)
#   scripts/gpu_check.sh run     on the device machine (carry .whl): install them, then
#                                1. the backend contract suite on CUDA (Warp kernels compile for the GPU here),
#                                2. phc bench env --backend warp at 4096 envs (env-only SPS, physics vs task split),
#                                3. phc bench train of configs/phc_gpu.yaml (training SPS; physics, task, policy
#                                   forward and update shares of an iteration),
#                                4. a 3-minute phc fit of configs/phc_gpu.yaml (end-to-end SPS, episode length).
#   Logs land in $OUT (or runs/gpu_check) as contract.log, bench_env.log, bench_train.log, fit.log.
#   The timeouts add up to < 600 s, one device command.
#
# configs/phc_gpu.yaml runs MuJoCo Warp on the GPU with the motion library, task tensors and rollout on it too.
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

out="${OUT:-runs/gpu_check}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" WARP_CACHE_PATH="$PWD/.warp_cache"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site" || exit 1
fi
phc() { python3 -c 'import sys; from phc_lightning.cli import main; sys.argv[0] = "phc"; main()' "$@"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c 'import torch, warp, mujoco_warp; print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
"warp", warp.__version__, "mujoco_warp", mujoco_warp.__version__)'

# 1. contract suite on CUDA: first Warp compile for the GPU included (~1-2 min)
start=$(date +%s)
timeout 150 python3 -m pytest -q tests/sim/test_backend_contract.py --durations=5 2>&1 | tee "$out/contract.log"
echo "contract suite: $(( $(date +%s) - start )) s" | tee -a "$out/contract.log"

# 2. env-only SPS at puffer-phc scale
timeout 90 phc bench env --backend warp --num_envs 1024 4096 --steps 60 --repeats 2 2>&1 | tee "$out/bench_env.log"

# 3. training SPS and where an iteration's time goes (the first of the 4 iterations is not measured)
timeout 90 phc bench train --config configs/phc_gpu.yaml --epochs 4 2>&1 | tee "$out/bench_train.log"

# 4. end-to-end: 3 minutes of training of the GPU config (the trainer stops itself at max_time)
timeout 240 phc fit --config configs/phc_gpu.yaml --trainer.max_time 00:00:03:00 \
  --trainer.default_root_dir "$out/fit" 2>&1 | tee "$out/fit.log"
echo "done"
