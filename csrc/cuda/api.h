// Entry points of the CUDA engine (torch-free, implemented in .cu files).
#pragma once
#include "../core/launch.h"

namespace fusedopt::cuda {

using Kernel = void (*)(const Launch&);

// Kernel of rule `name` (an op name of the rule table); null if unknown.
Kernel kernel(const char* name);

// Standalone block-wise 8-bit codec (core/q8.h) on `stream` (a cudaStream_t); any block size >= 1.
void q8_quantize(const float* x, int64_t n, int64_t block, bool is_signed, uint8_t* codes, float* absmax,
                 void* stream);
void q8_dequantize(const uint8_t* codes, const float* absmax, int64_t n, int64_t block, bool is_signed, float* out,
                   void* stream);

}  // namespace fusedopt::cuda
