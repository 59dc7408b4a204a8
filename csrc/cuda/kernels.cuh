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
FO_DEFINE_SHARD_FILL()
}  // namespace fusedopt::cuda
