// What the torch glue hands an engine for one op call: raw pointers and scalars.
// torch-free, so the engines (and their C++ unit tests) never include torch.
#pragma once
#include "config.h"
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
  void* stream;               // CUDA: cudaStream_t
};

}  // namespace fusedopt
