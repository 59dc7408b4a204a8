#!/usr/bin/env bash
# `bash run.sh gpu`: one call on a bare GPU machine (torch and nvcc preinstalled, no network; peers that are
# missing are skipped). It builds the extension (or takes a prebuilt one from .gpu/ when it was built from
# these very sources: tools/gpu_prebuild.sh), runs tests/test_cuda.py and the GPU benchmarks, and writes
#   bench/results/gpu-<date>-<commit>.md    device, driver, torch, commit, date, build, tests, benchmarks
# plus the full logs beside it (gpu-<date>-<commit>-*.log). Where $OUT is set (a device tool's output
# folder), the results are copied there too. Budget: about 6 minutes on one H100/H200 with 16 cores.
#   FUSEDOPT_GPU_TEST_TIMEOUT  seconds for the CUDA tests (default 300)
#   FUSEDOPT_GPU_BENCH         "full" (default): bench_gpu.py then bench_step.py --device cuda (every rule beside
#                              its peers); "gpu": bench_gpu.py only; "quick": bench_gpu.py --quick; "none"
#   FUSEDOPT_GPU_BENCH_TIMEOUT seconds for bench_gpu.py (default 200)
#   FUSEDOPT_GPU_BENCH_ARGS    extra arguments of bench_gpu.py (e.g. --sections adamw,rules,8bit)
#   FUSEDOPT_GPU_BUILD_CHECK   1: also time a from-source build (16 jobs) in a scratch copy, at the end
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
start=$(date +%s)
# the prebuilt module's COMMIT first: a device copy of the tree may hold a stale .git
commit=$( { [ -f .gpu/COMMIT ] && sed "s/ .*//" .gpu/COMMIT; } || git rev-parse --short HEAD 2>/dev/null || echo unknown)
export FUSEDOPT_COMMIT="$commit$( [ -f .gpu/COMMIT ] && grep -q uncommitted .gpu/COMMIT && echo ' (with uncommitted changes)')"
day=$(date +%Y-%m-%d)
mkdir -p bench/results
base=bench/results/gpu-$day-$commit
res=$base.md
log() { echo "== $*" | tee -a "$base-run.log"; }
: > "$base-run.log"

# ---- 1. the extension ----------------------------------------------------------------------------
export PYTHONPATH="$PWD/python${PYTHONPATH:+:$PYTHONPATH}"
# test oracles carried as wheels (tools/gpu_prebuild.sh), for a machine without them and without network
if ls .gpu/wheels/*.whl >/dev/null 2>&1; then
  site=$(mktemp -d)
  $PY -m pip install -q --no-index --no-deps --no-compile --target "$site" .gpu/wheels/*.whl &&
    export PYTHONPATH="$PYTHONPATH:$site"
fi
t0=$(date +%s)
build_how=""
if [ -f .gpu/SOURCE_HASH ] && [ "$(cat .gpu/SOURCE_HASH)" = "$(bash tools/source_hash.sh)" ] && ls .gpu/_C*.so.xz >/dev/null 2>&1; then
  rm -f python/fusedopt/_C*.so
  for f in .gpu/_C*.so.xz; do
    $PY -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" \
      "$f" "python/fusedopt/$(basename "$f" .xz)"
  done
  build_how="prebuilt on a CPU machine by tools/gpu_prebuild.sh (sources match, hash $(cat .gpu/SOURCE_HASH)), copied"
else
  export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
  MAX_JOBS=${MAX_JOBS:-$(nproc)} TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} \
    $PY setup.py build_ext --inplace > "$base-build.log" 2>&1 || { tail -40 "$base-build.log"; log "build failed"; }
  build_how="built from source here with $(nproc) jobs (log: $(basename "$base-build.log"))"
fi
build_s=$(( $(date +%s) - t0 ))
info=$($PY -c "import fusedopt, json; print(json.dumps(fusedopt.build_info()))" 2>&1)
log "extension: $build_how in $build_s s: $info"

# ---- 2. the CUDA tests ---------------------------------------------------------------------------------
t0=$(date +%s)
timeout -s INT -k 20 "${FUSEDOPT_GPU_TEST_TIMEOUT:-300}" $PY -m pytest tests/test_cuda.py -q -ra -p no:cacheprovider \
  > "$base-pytest.log" 2>&1
test_rc=$?
test_s=$(( $(date +%s) - t0 ))
summary=$(grep -E "^(=+ )?[0-9]+ (passed|failed)|^=+ .*(passed|failed|error)" "$base-pytest.log" | tail -1)
[ $test_rc -eq 124 ] || [ $test_rc -eq 2 ] && [ -n "$(grep -l KeyboardInterrupt "$base-pytest.log" 2>/dev/null)" ] && summary="$summary (stopped by the ${FUSEDOPT_GPU_TEST_TIMEOUT:-300} s timeout)"
log "tests/test_cuda.py: rc=$test_rc in $test_s s: $summary"

# ---- 3. the benchmarks ----------------------------------------------------------------------------------
t0=$(date +%s)
bench=${FUSEDOPT_GPU_BENCH:-full}
: > "$base-bench.log"
case "$bench" in
  quick) timeout "${FUSEDOPT_GPU_BENCH_TIMEOUT:-200}" $PY bench/bench_gpu.py --quick --out "$base-bench_gpu.md" \
           >> "$base-bench.log" 2>&1 ;;
  none) ;;
  *) timeout "${FUSEDOPT_GPU_BENCH_TIMEOUT:-200}" $PY bench/bench_gpu.py ${FUSEDOPT_GPU_BENCH_ARGS:-} \
       --out "$base-bench_gpu.md" >> "$base-bench.log" 2>&1
     if [ "$bench" = full ]; then
       timeout 150 $PY bench/bench_step.py --device cuda --workloads gpt2s --no-host --retries 0 --warmup 2 --timed 5 \
         --max-seconds-per-contender 3 --quiet --out "$base-bench_step.md" >> "$base-bench.log" 2>&1
     fi ;;
esac
bench_s=$(( $(date +%s) - t0 ))
log "benchmarks in $bench_s s"

# ---- 4. optional: a from-source build on this machine, timed -----------------------------------------------
build_check=""
if [ "${FUSEDOPT_GPU_BUILD_CHECK:-0}" = 1 ]; then
  scratch=$(mktemp -d)
  tar --exclude=./.gpu --exclude=./build --exclude='./python/fusedopt/_C*.so' -cf - . | (cd "$scratch" && tar -xf -)
  t0=$(date +%s)
  (cd "$scratch" && CUDA_HOME=${CUDA_HOME:-/usr/local/cuda} MAX_JOBS=$(nproc) TORCH_CUDA_ARCH_LIST=9.0 \
     timeout 240 $PY setup.py build_ext --inplace > "$OLDPWD/$base-build-check.log" 2>&1)
  rc=$?
  build_check="from-source build in a scratch copy with $(nproc) jobs: rc=$rc in $(( $(date +%s) - t0 )) s \
(per-unit times in $(basename "$base-build-check.log"))"
  log "$build_check"
  rm -rf "$scratch"
fi

# ---- 5. the results file ------------------------------------------------------------------------------------
{
  echo "# fusedopt on a GPU: $day, commit $FUSEDOPT_COMMIT"
  echo
  echo "Written by \`bash run.sh gpu\` (tools/gpu_run.sh)."
  echo
  echo "- device: $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | head -1)"
  echo "- driver: $(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1)"
  echo "- torch: $($PY -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)' 2>&1), Python $($PY -c 'import platform; print(platform.python_version())')"
  echo "- host: $(nproc) cores; nvcc: $(nvcc --version 2>/dev/null | tail -1)"
  echo "- extension: $build_how in $build_s s"
  echo "- fusedopt.build_info(): \`$info\`"
  [ -n "$build_check" ] && echo "- $build_check"
  echo "- tests/test_cuda.py: $summary (rc $test_rc, $test_s s; log: $(basename "$base-pytest.log"))"
  echo "- benchmarks: $bench_s s (logs: $(basename "$base-bench.log"))"
  echo "- whole run: $(( $(date +%s) - start )) s"
  echo
  echo "## Failed or skipped tests"
  echo
  echo '```'
  grep -E "^(FAILED|ERROR|SKIPPED)" "$base-pytest.log" | cut -c1-220 | head -60
  echo '```'
  for f in "$base-bench_gpu.md" "$base-bench_step.md"; do
    [ -f "$f" ] || continue
    echo
    echo "## $(basename "$f")"
    echo
    sed '1d' "$f"
  done
} > "$res"
log "wrote $res"
if [ -n "${OUT:-}" ]; then  # the results file already holds the benchmark tables
  cp "$res" "$base"-*.log "$OUT"/ 2>/dev/null
fi
tail -n 5 "$base-pytest.log"
exit $test_rc
