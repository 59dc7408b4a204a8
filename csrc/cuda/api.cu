// Entry point of the CUDA engine (api.h) and pass 1 of every op call, the step bump (mta.cuh).
#include <cuda_runtime.h>

#include "api.h"
#include "mta.cuh"
#include "../core/rule_table.h"
#include "../core/shards.h"

namespace fusedopt::cuda {

namespace {

static_assert(sizeof(StepBumpArgs) <= kArgBytes, "step list exceeds the kernel-argument budget");

// One thread per step counter; on a skipped step (found_inf != 0) no counter moves.
__global__ void __launch_bounds__(kStepBump.bound) step_bump_kernel(const __grid_constant__ StepBumpArgs a) {
  const int i = int(threadIdx.x);
  if (i >= a.n) return;
  if (a.found_inf != nullptr && *a.found_inf != 0.0f) return;
  if (a.f64) {
    *static_cast<double*>(a.step[i]) += 1.0;
  } else {
    *static_cast<float*>(a.step[i]) += 1.0f;
  }
}

}  // namespace

void bump_steps(const Launch& L, const char* what) {
  cudaStream_t stream = static_cast<cudaStream_t>(L.stream);
  StepBumpArgs a;
  a.found_inf = L.found_inf;
  a.f64 = L.step_f64;
  for_each_batch(kStepBump, L.ntensors, [&](int64_t t0, int n, int threads) {
    a.n = n;
    for (int i = 0; i < n; ++i) a.step[i] = L.tensors[t0 + i].step;
    step_bump_kernel<<<1, threads, 0, stream>>>(a);
    check_launch(what, "step-counter kernel launch");
  });
}

#define FO_DECLARE_FILL(s) void fill_shard_##s(Kernel* table);
FO_SHARD_LIST(FO_DECLARE_FILL)
#undef FO_DECLARE_FILL

namespace {
struct Table {
  Kernel k[kNumRules] = {};
  Table() {
#define FO_FILL_SHARD(s) fill_shard_##s(k);
    FO_SHARD_LIST(FO_FILL_SHARD)
#undef FO_FILL_SHARD
  }
};
}  // namespace

Kernel kernel_at(int rule) {
  static const Table t;
  return rule < 0 || rule >= kNumRules ? nullptr : t.k[rule];
}

Kernel kernel(const char* name) { return kernel_at(rule_index(name)); }

}  // namespace fusedopt::cuda
