// Entry points of the CUDA engine (torch-free, implemented in .cu files).
#pragma once
#include "../core/adafactor.h"
#include "../core/launch.h"
#include "../core/reduce.h"

namespace fusedopt::cuda {

using Kernel = void (*)(const Launch&);

// Kernel of rule number `rule` (core/rule_table.h); null if out of range.
Kernel kernel_at(int rule);
// Kernel of rule `name` (an op name of the rule table); null if unknown (a string search: tests only).
Kernel kernel(const char* name);

// The reduction engine (core/reduce.h, reduce.cu): asynchronous on args.stream, no host sync.
// fp64 workspace (device memory) reduce() needs for `nchunks` chunks of `ntensors` tensors.
inline int64_t reduce_workspace(int64_t nchunks, int64_t ntensors) { return nchunks + ntensors + 1; }
void reduce(const ReduceArgs& a);
void row_col(const RowColArgs& a);
void clip(const ClipArgs& a);

// Adafactor's fused step (core/adafactor.h, adafactor.cu): asynchronous on `stream`, no host sync.
// a.tensors is host memory (read on the host to build launches); its pointers are device memory,
// as is a.found_inf. `workspace`: >= adafactor_workspace(a) doubles of device memory.
int64_t adafactor_workspace(const AfArgs& a);
void adafactor(const AfArgs& a, double* workspace, void* stream);

// Standalone block-wise 8-bit codec (core/q8.h) on `stream` (a cudaStream_t); any block size >= 1.
void q8_quantize(const float* x, int64_t n, int64_t block, bool is_signed, uint8_t* codes, float* absmax,
                 void* stream);
void q8_dequantize(const uint8_t* codes, const float* absmax, int64_t n, int64_t block, bool is_signed, float* out,
                   void* stream);

}  // namespace fusedopt::cuda
