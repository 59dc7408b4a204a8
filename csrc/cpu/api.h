// Entry points of the CPU engine (torch-free). One kernel per rule per ISA;
// cpu_kernel() picks the best ISA the running CPU supports, once.
#pragma once
#include <cstdlib>
#include <cstring>

#include "../core/launch.h"
#include "../core/reduce.h"
#include "../core/adafactor.h"

namespace fusedopt::cpu {

using Kernel = void (*)(const Launch&);

enum class Isa : int { Scalar = 0, Avx2 = 1, Avx512 = 2 };

// Kernel of rule number `rule` (core/rule_table.h) for the active ISA; null if out of range.
Kernel kernel_at(int rule);
// All kernels of one ISA, indexed by rule number (kNumRules entries).
const Kernel* kernel_table(Isa isa);
// Kernel of rule `name` (an op name of the rule table) for the chosen ISA; null if unknown
// (a string search: for tests and registration, not per call).
Kernel kernel(const char* name);
Kernel kernel_for(const char* name, Isa isa);

// The reduction engine (core/reduce.h) for the chosen ISA. Results do not depend on the ISA.
using ReduceKernel = void (*)(const ReduceArgs&);
using RowColKernel = void (*)(const RowColArgs&);
ReduceKernel reduce_kernel(Isa isa);
RowColKernel rowcol_kernel(Isa isa);
using ClipKernel = void (*)(const ClipArgs&);
ClipKernel clip_kernel(Isa isa);
// Adafactor's multi-pass step (core/adafactor.h).
using AdafactorKernel = void (*)(const AfArgs&);
AdafactorKernel adafactor_kernel(Isa isa);

Isa active_isa();           // what kernel() uses: best supported, capped by FUSEDOPT_CPU_ISA
const char* isa_name(Isa);  // "scalar" | "avx2" | "avx512"
// The 8-bit state decoder the active ISA runs on this CPU (q8_block.h): "avx512-vbmi" (byte
// permutes, CPUs with AVX-512 VBMI), "avx512-permute" (AVX-512F permutes, without VBMI), "avx2-gather",
// "scalar".
const char* q8_decoder_name();
// Whether the AVX-512 walk may use the VBMI decoder: the CPU has VBMI and FUSEDOPT_Q8_DECODER is not
// "permute" (that setting runs the decoder of CPUs without VBMI here: for tests and benchmarks).
inline bool q8_vbmi_enabled() {
#if defined(__x86_64__)
  static const bool on = [] {
    __builtin_cpu_init();
    const char* cap = std::getenv("FUSEDOPT_Q8_DECODER");
    return __builtin_cpu_supports("avx512vbmi") && !(cap != nullptr && !std::strcmp(cap, "permute"));
  }();
  return on;
#else
  return false;
#endif
}
bool openmp_enabled();

// 8-bit codebooks for the CPU engine: {unsigned, signed}, with their bucket tables (built once).
const Q8Book* q8_books();

// Standalone block-wise codec (core/q8.h), OpenMP over blocks; any block size >= 1.
// quantize: x[n] -> codes[n], absmax[ceil(n / block)];  dequantize: the inverse map into out[n].
void q8_quantize(const float* x, int64_t n, int64_t block, bool is_signed, uint8_t* codes, float* absmax,
                 int nthreads);
void q8_dequantize(const uint8_t* codes, const float* absmax, int64_t n, int64_t block, bool is_signed,
                   float* out, int nthreads);

}  // namespace fusedopt::cpu
