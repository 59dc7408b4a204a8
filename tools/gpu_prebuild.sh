#!/usr/bin/env bash
# Build fusedopt's extension here (a CPU machine with nvcc) for a GPU machine whose torch differs from the
# local one, so a short lease on that machine is spent testing, not compiling:
#   bash tools/gpu_prebuild.sh            (GPU_TORCH=2.11.0 by default: the GPU machines' torch)
# writes .gpu/ (ignored by git): _C.abi3.so.xz (CPU + CUDA sm_90, built against torch $GPU_TORCH; an abi3
# module, so any Python 3.9+ loads it), SOURCE_HASH (tools/source_hash.sh) and COMMIT. On the GPU machine,
# `bash run.sh gpu` uses it when the hash matches its sources, and builds from source otherwise.
# The torch-free engines are the same for every torch, so only the glue is compiled against $GPU_TORCH.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TORCH=${GPU_TORCH:-2.11.0}
CACHE=${GPU_PREBUILD_CACHE:-$HOME/.cache/fusedopt/gpu-prebuild}
VENV=${GPU_PREBUILD_VENV:-$CACHE/venv-torch$TORCH}
mkdir -p "$CACHE"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -c "import torch, ninja, setuptools" 2>/dev/null ||
  "$VENV/bin/pip" install -q "torch==$TORCH" ninja setuptools wheel numpy
if [ -z "${CUDA_HOME:-}" ]; then
  top=$(nvcc --dryrun -c x.cu 2>&1 | sed -n 's/^#\$ TOP=//p' | head -n1 || true)
  [ -n "$top" ] && export CUDA_HOME="$(cd "$top" && pwd)"
fi
[ -n "${CUDA_HOME:-}" ] || { echo "gpu_prebuild: no nvcc found" >&2; exit 1; }
# the engines (torch-free) come from the checkout's own CUDA build (build/engines, shared with run.sh test);
# only the glue is compiled here, against $TORCH, into a build folder of its own
PATH="$VENV/bin:$PATH" MAX_JOBS=${MAX_JOBS:-2} TORCH_CUDA_ARCH_LIST=9.0 FUSEDOPT_CPU_ONLY=0 \
  "$VENV/bin/python" setup.py build_ext --build-temp "$CACHE/temp" --build-lib "$CACHE/lib" > "$CACHE/build.log" 2>&1 ||
  { tail -40 "$CACHE/build.log"; echo "gpu_prebuild: build failed (log: $CACHE/build.log)" >&2; exit 1; }
grep -q "CUDA skipped" "$CACHE/build.log" && { grep "fusedopt build" "$CACHE/build.log"; exit 1; }
rm -rf .gpu && mkdir -p .gpu
# stripped of debug info and xz-compressed (~20 MB): a device call carries at most 64 MiB
for f in "$CACHE"/lib/fusedopt/_C*.so; do
  strip --strip-debug -o ".gpu/$(basename "$f")" "$f"
  xz -T2 -6 ".gpu/$(basename "$f")"
done
# the pure-Python test oracles tests/specs.py imports (the GPU machines have no network to fetch them)
mkdir -p .gpu/wheels
"$VENV/bin/python" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 -d .gpu/wheels pytorch-optimizer adabelief-pytorch schedulefree ||
  echo "gpu_prebuild: could not fetch the oracle wheels (tests/test_cuda.py then needs them installed there)"
bash tools/source_hash.sh > .gpu/SOURCE_HASH
{ git rev-parse --short HEAD; git diff --quiet HEAD || echo "(with uncommitted changes)"; } | tr '\n' ' ' > .gpu/COMMIT
echo "gpu_prebuild: wrote .gpu/ ($(du -sh .gpu | cut -f1)) for $(cat .gpu/COMMIT)against torch $TORCH"
