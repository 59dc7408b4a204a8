// Entry points of the CUDA engine (torch-free, implemented in .cu files).
#pragma once
#include "../core/launch.h"
#include "../core/reduce.h"

namespace fusedopt::cuda {

using Kernel = void (*)(const Launch&);

// Kernel of rule `name` (an op name of the rule table); null if unknown.
Kernel kernel(const char* name);

// The reduction engine (core/reduce.h, reduce.cu): asynchronous on args.stream, no host sync.
// fp64 workspace (device memory) reduce() needs for `nchunks` chunks of `ntensors` tensors.
inline int64_t reduce_workspace(int64_t nchunks, int64_t ntensors) { return nchunks + ntensors + 1; }
void reduce(const ReduceArgs& a);
void row_col(const RowColArgs& a);
void clip(const ClipArgs& a);

}  // namespace fusedopt::cuda
