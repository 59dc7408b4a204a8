#!/usr/bin/env bash
# One entry point that does all set-up on a fresh machine, then runs what you ask:
#   bash run.sh demo    short training run + benchmark against torch.optim (prints ratios)
#   bash run.sh test    C++ core tests (ctest) and Python tests (pytest)
#   bash run.sh build   set-up and build only
#   bash run.sh bench   full benchmark (bench/bench_step.py, extra args passed on); also installs the
#                       benchmark-only peer DeepSpeed used by bench/bench_step.py
#   bash run.sh gpu     on a GPU machine with torch and nvcc preinstalled and no network (no venv, no
#                       installs): build, tests/test_cuda.py, GPU benchmarks, bench/results/gpu-<date>-<commit>.md
#                       (tools/gpu_run.sh)
# Set-up: a venv (cached outside the clone, $FUSEDOPT_VENV, default ~/.cache/fusedopt/venv) with
# torch 2.14.1 (a CUDA 13.0 build, so the CUDA kernels compile with the installed nvcc 13.0), then the
# extension built in place (python setup.py build_ext --inplace: the engines with CMake into build/engines,
# kept between runs, so a second command rebuilds nothing) and the checkout's python/ put on the venv's path.
# FUSEDOPT_CPU_ONLY=1 skips the CUDA kernels.
set -euo pipefail
cd "$(dirname "$0")"
what="${1:-test}"
shift || true
if [ "$what" = gpu ]; then
  exec bash tools/gpu_run.sh "$@"
fi

VENV="${FUSEDOPT_VENV:-$HOME/.cache/fusedopt/venv}"
TORCH_SPEC="${FUSEDOPT_TORCH:-torch==2.14.1}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating venv $VENV"
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
# test oracles (never runtime dependencies of fusedopt): pytorch-optimizer, adabelief-pytorch,
# bitsandbytes (8-bit states, AdEMAMix) and torchao, schedulefree (Schedule-Free AdamW), transformers
# (Adafactor), scikit-learn (small real data),
# matplotlib (the plots of examples/); the trainers of the integration tests: transformers' Trainer
# (+ accelerate), lightning (+ jsonargparse for LightningCLI), timm (+ torchvision); build tools: ninja, cmake
if ! "$PY" -c "import torch, pytest, ninja, cmake, numpy, pytorch_optimizer, adabelief_pytorch, bitsandbytes, torchao, schedulefree, transformers, sklearn, matplotlib, accelerate, lightning, jsonargparse, timm, torchvision" 2>/dev/null; then
  echo "== installing $TORCH_SPEC, build/test tools and test oracles into $VENV"
  "$PY" -m pip install -q --upgrade pip
  "$PY" -m pip install -q "$TORCH_SPEC" pytest ninja cmake numpy setuptools wheel pytorch-optimizer adabelief-pytorch bitsandbytes torchao schedulefree transformers scikit-learn matplotlib accelerate lightning "jsonargparse[signatures]"
  # timm imports torchvision, whose binary must match torch's version (torch 2.M.P <-> torchvision
  # 0.(M+15).P), so both go in without dependencies and torch is never replaced
  tv=$("$PY" -c "import torch; M, P = torch.__version__.split('+')[0].split('.')[1:3]; print(f'0.{int(M) + 15}.{P}')")
  "$PY" -m pip install -q --no-deps timm "torchvision==$tv" pillow
fi
export PATH="$VENV/bin:$PATH"

# nvcc on PATH may be a wrapper: the toolkit root is what `nvcc --dryrun` calls TOP
if [ -z "${CUDA_HOME:-}" ] && command -v nvcc >/dev/null 2>&1; then
  top=$(nvcc --dryrun -c x.cu 2>&1 | sed -n 's/^#\$ TOP=//p' | head -n1 || true)
  [ -n "$top" ] && export CUDA_HOME="$(cd "$top" && pwd)"
fi
export TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}"
export MAX_JOBS="${MAX_JOBS:-$(nproc)}"

echo "== building fusedopt (CUDA_HOME=${CUDA_HOME:-none}, archs $TORCH_CUDA_ARCH_LIST, $MAX_JOBS jobs)"
t0=$(date +%s)
# an older `pip install -e .` of fusedopt would shadow the checkout: the checkout's python/ is what runs
"$PY" -m pip uninstall -q -y fusedopt >/dev/null 2>&1 || true
"$PY" setup.py -q build_ext --inplace
site=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
echo "$PWD/python" > "$site/fusedopt-checkout.pth"
"$PY" -c "import fusedopt; print('fusedopt build:', fusedopt.build_info())"
echo "== build took $(( $(date +%s) - t0 )) s"
builddir="${FUSEDOPT_ENGINE_BUILD:-build/engines}"

case "$what" in
  build) ;;
  demo)
    "$PY" bench/demo.py "$@"
    ;;
  bench)
    # DeepSpeed's CPU Adam/Adagrad/Lion (JIT-built C++ ops) are benchmark peers only, never test deps
    "$PY" -c "import deepspeed" 2>/dev/null || "$PY" -m pip install -q deepspeed || echo "(deepspeed not installed: no DeepSpeed rows)"
    # timm (a peer of bench/bench_cross.py) is installed by the set-up above, with its torchvision
    "$PY" bench/bench_step.py "$@"
    ;;
  test)
    echo "== C++ core tests (ctest, in the engines' build directory $builddir: nothing is compiled twice)"
    cmake --build "$builddir" -j "$MAX_JOBS"
    ctest --test-dir "$builddir" --output-on-failure
    echo "== Python tests"
    "$PY" -m pytest tests -q -ra "$@"
    ;;
  *)
    echo "usage: bash run.sh [demo|test|build|bench|gpu]" >&2
    exit 2
    ;;
esac
