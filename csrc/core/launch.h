// What the torch glue hands an engine for one op call: raw pointers and scalars.
// torch-free, so the engines (and their C++ unit tests) never include torch.
#pragma once
#include "config.h"
#include "q8.h"
#include "storage.h"

namespace fusedopt {

struct Launch {
  const TensorPtrs* tensors;  // one entry per tensor (empty ones too: their steps count)
  int64_t ntensors;
  int nstates;                // state lists actually present
  double hyper[kMaxHyper];    // rule hyperparameters, rule-defined order
  double lr;                  // host lr (used when lr_ptr is null)
  const float* lr_ptr;        // device lr (CUDA, tensor lr); null on the host path
  const float* grad_scale;    // null when no AMP scaling; CPU: host pointer
  const float* found_inf;     // null when absent; non-zero value => skip the whole step
  int64_t flags;              // see config.h
  Dt param_dt;
  Dt state_dt;
  ParamMode param_mode;
  bool step_f64;              // step tensors are float64 (torch's default dtype was float64)
  const float* global_in;     // global reduced values a rule reads (core/reduce.h), else null
  double* red_workspace;      // CUDA, rules with kRedOut: fp64 device workspace (core/reduce.h)
  int nthreads;               // CPU: threads to use
  // 8-bit states (state_dt == U8): block size, which engine state slots use the signed map (bit j),
  // and the host codebooks {unsigned, signed} (CPU; CUDA kernels use their own device copies)
  int q8_block;
  uint32_t q8_signed_slots;
  const Q8Book* q8_books;
  void* stream;               // CUDA: cudaStream_t
};

}  // namespace fusedopt
