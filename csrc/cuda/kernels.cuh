// Body of one generated CUDA kernel unit (CMakeLists.txt writes one per shard, defining FO_SHARD):
// for each rule of the table whose number r has r % FO_NUM_SHARDS == FO_SHARD (core/shards.h), the
// kernels of every storage combination of core/dispatch.h, and fill_shard_<FO_SHARD>, which puts
// them into the engine's kernel table (api.cu).
#include "../core/rule_table.h"
#include "../core/shards.h"
#include "api.h"
#include "rule_kernel.cuh"

#ifndef FO_SHARD
#error "define FO_SHARD before including kernels.cuh"
#endif

namespace fusedopt::cuda {
namespace {
template <int R, class Rule>
void kernel_of(const Launch& L) {
  dispatch<Rule>(L, kRuleOps[R]);
}
}  // namespace

#define FO_FILL_NAME_(s) fill_shard_##s
#define FO_FILL_NAME(s) FO_FILL_NAME_(s)
void FO_FILL_NAME(FO_SHARD)(Kernel* table) {
#define FO_FILL(op, Rule) \
  if constexpr (kRule_##op % FO_NUM_SHARDS == FO_SHARD) table[kRule_##op] = &kernel_of<kRule_##op, rules::Rule>;
  FO_ELEMENTWISE_RULES(FO_FILL)
#undef FO_FILL
}
#undef FO_FILL_NAME
#undef FO_FILL_NAME_

}  // namespace fusedopt::cuda
