// Adafactor (Shazeer & Stern 2018), ALGORITHMS.md §13: the multi-pass factored rule, torch-free.
//
// Two semantics share the kernels (flag kAfTorch picks):
//   * transformers' Adafactor [REF]: U = g^2 + eps1; R, C EMAs with beta2t = 1 - t^decay;
//     u = g * rsqrt(R_i / mean(R)) * rsqrt(C_j) (or g * rsqrt(V)); u /= max(1, RMS(u)/d); u *= alpha;
//     optional momentum M = beta1 M + (1-beta1) u; p -= wd*alpha*p; p -= u (or M).
//   * torch.optim.Adafactor: U = g^2 (no eps1 added), lerp EMAs with weight t^decay,
//     v = max(R_i C_j / max(mean(R), eps1), eps1^2), u = g * rsqrt(v), alpha = max(eps2, RMS(p))
//     * min(lr, 1/sqrt(t)); p *= 1 - lr*wd; p -= alpha / max(1, RMS(u)/d) * u.
//
// Passes of one step over a list of tensors of one device and dtype (per tensor: its own step t):
//   0. reduction engine: sum p^2 per tensor -> RMS(p) (stored in the `RMS` state; alpha needs it);
//   1. reduction engine: row/col means of U over the last two dims of each factored grad (-> R, C
//      EMAs, then per-row / per-col factors, a small pass over rows and cols only);
//   2. element pass: u (unfactored: also the V EMA, stored) and its sum of squares per tensor;
//   3. element pass: recompute u from the factors (or the stored V), clip, scale, momentum, decay,
//      write p. Per-tensor scalars (alpha, clip divisor) come from the sums of passes 0 and 2.
// Factored = ndim >= 2 (leading dims are batch: a [B, R, C] view); 0-d and 1-d use V.
#pragma once
#include <cmath>

#include "config.h"

namespace fusedopt {

enum : int {
  kAfRelativeStep = 1 << 0,
  kAfScaleParameter = 1 << 1,
  kAfWarmupInit = 1 << 2,
  kAfBeta1 = 1 << 3,
  kAfTorch = 1 << 4,  // torch.optim.Adafactor semantics
  kAfMaximize = 1 << 5,
};

// One tensor. States are float32 (float64 for float64 params), contiguous.
struct AfTensor {
  void* param;
  void* grad;
  void* row_or_var;  // factored: R [B*R]; else V [numel]
  void* col;         // factored: C [B*C]; else null
  void* exp_avg;     // [numel] when kAfBeta1, else null
  float* step;       // float32 scalar step (bumped by the kernel)
  float* rms;        // float32 scalar: RMS(p) before this step's update (transformers' state "RMS")
  int64_t numel, batch, rows, cols;
  bool factored;
};

struct AfArgs {
  AfTensor* tensors;
  int64_t ntensors;
  Dt dt;                    // param/grad dtype (F32, F64, F16, BF16); states F32 (F64 for F64 params)
  double lr, eps1, eps2, clip, decay, beta1, wd;
  int flags;
  const float* found_inf;   // non-zero: skip the whole step (no state, param or step changes)
  int nthreads;
};

// Per-tensor scalars of one step, from the step t and RMS(p).
struct AfScalars {
  double beta2t;      // EMA retention (transformers) ...
  double ema_w;       // ... and the lerp weight 1 - beta2t (torch: t^decay)
  double alpha;       // the step size (relative step times param scale, or lr)
  double decay;       // p *= decay before the update (weight decay)
};

FO_HD AfScalars af_scalars(const AfArgs& a, double t, double rms_p) {
  AfScalars s;
  const double w = std::pow(t, a.decay);
  s.ema_w = w;
  s.beta2t = 1.0 - w;
  if (a.flags & kAfTorch) {
    const double rho = a.lr < 1.0 / std::sqrt(t) ? a.lr : 1.0 / std::sqrt(t);
    s.alpha = (rms_p > a.eps2 ? rms_p : a.eps2) * rho;  // python's max(eps2, rms)
    s.decay = 1.0 - a.lr * a.wd;
  } else {
    double rho = a.lr;
    if (a.flags & kAfRelativeStep) {
      const double cap = (a.flags & kAfWarmupInit) ? 1e-6 * t : 1e-2;
      rho = cap < 1.0 / std::sqrt(t) ? cap : 1.0 / std::sqrt(t);
    }
    // python's max(eps2, rms): a NaN rms loses (nan > eps2 is false)
    const double scale = (a.flags & kAfScaleParameter) ? (rms_p > a.eps2 ? rms_p : a.eps2) : 1.0;
    s.alpha = scale * rho;
    s.decay = 1.0 - a.wd * s.alpha;
  }
  return s;
}

}  // namespace fusedopt
