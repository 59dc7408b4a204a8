// Adafactor (Shazeer & Stern 2018), docs/algorithms.md §13: the multi-pass factored rule, torch-free.
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
// The CPU engine has no pass 0: RMS(p) is needed only by pass 3, so pass 2 sums p^2 as it goes (the
// EMA weights of passes 1-2 depend on the step alone). CUDA keeps pass 0 (AfParamSumSq).
// Factored = ndim >= 2 (leading dims are batch: a [B, R, C] view); 0-d and 1-d use V.
// AMP: with grad_scale set, every grad is first divided by *grad_scale in place (in the param dtype's
// arithmetic, written back unscaled, as torch's fused optimizers do) and the passes read the stored
// value; not on a skipped step (found_inf != 0), whose grads stay as they are.
#pragma once
#include <cmath>

#include <vector>

#include "config.h"
#include "numeric.h"
#include "reduce.h"

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
  const float* grad_scale;  // non-null: unscale the grads first (CPU: host pointer; CUDA: device pointer)
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

// Pass 0's reduction (reduction engine, core/reduce.h): sum p^2 of tensors [t0, t0 + n) of a call
// into out64[0..n) (fp64). Host code; the backend sets workspace / stream / nthreads.
struct AfParamSumSq {
  std::vector<const void*> data;
  std::vector<int64_t> numel;
  ReduceArgs args{};
  AfParamSumSq(const AfArgs& a, int64_t t0, int64_t n, double* out64) : data(size_t(n)), numel(size_t(n)) {
    for (int64_t t = 0; t < n; ++t) {
      data[size_t(t)] = a.tensors[t0 + t].param;
      numel[size_t(t)] = a.tensors[t0 + t].numel;
    }
    args.data = data.data();
    args.numel = numel.data();
    args.ntensors = n;
    args.dt = a.dt;
    args.op = RedOp::SumSq;
    args.p = 2.0;
    args.per_tensor64 = out64;
  }
  AfParamSumSq(const AfParamSumSq&) = delete;  // args points into the vectors
  AfParamSumSq& operator=(const AfParamSumSq&) = delete;
};

// ---- per-element and per-row/col math, shared by the CPU (cpu/adafactor_impl.h) and CUDA
// (cuda/adafactor.cu) passes so both backends compute the same fp32 (fp64) expressions ----------

// Per-tensor values the element passes read, besides the row/col factors.
template <class T>
struct AfElemCtx {
  T beta2t, ema_w, one_minus_w;  // EMA retention / weight (and 1 - weight for torch's lerp)
  bool w_small;                  // torch's lerp branch (weight < 0.5)
  T floor;                       // transformers: eps1 (added to g^2); torch: eps1^2 (variance clamp)
  T clipdiv;                     // transformers: max(1, RMS(u)/d) (set after pass 2)
  T alpha, neg_alpha_over_clip;  // step size; torch: -alpha / max(1, RMS(u)/d) (set after pass 2)
  T decay, beta1, one_minus_beta1;
};

template <bool kTorch, class T>
FO_HD AfElemCtx<T> af_elem_ctx(const AfArgs& a, const AfScalars& s) {
  AfElemCtx<T> c;
  c.beta2t = T(s.beta2t);
  c.ema_w = T(kTorch ? s.ema_w : 1.0 - s.beta2t);
  c.one_minus_w = T(1.0 - double(c.ema_w));
  c.w_small = s.ema_w < 0.5;
  c.floor = T(kTorch ? a.eps1 * a.eps1 : a.eps1);
  c.clipdiv = T(1);
  c.alpha = T(s.alpha);
  c.neg_alpha_over_clip = T(-s.alpha);
  c.decay = T(s.decay);
  c.beta1 = T(a.beta1);
  c.one_minus_beta1 = T(1.0 - a.beta1);
  return c;
}

// EMA of a statistic (R, C or V) towards x: transformers' mul/add, torch's lerp.
template <bool kTorch, class T>
FO_HD T af_ema(T old, T x, const AfElemCtx<T>& c) {
  if constexpr (kTorch) return lerp_torch(old, x, c.ema_w, c.one_minus_w, c.w_small);
  else return old * c.beta2t + c.ema_w * x;
}

// Row and column factors of a factored tensor, from the updated R_i, C_j and mean(R) of its matrix:
// transformers: rf = rsqrt(R_i / mean R), cf = rsqrt(C_j); torch: rf = R_i, cf = C_j (the division
// by max(mean R, eps1) happens per element, see af_factored_u).
template <bool kTorch, class T>
FO_HD T af_row_factor(T r, T mean) {
  if constexpr (kTorch) return r;
  else return T(1) / std::sqrt(r / mean);
}
template <bool kTorch, class T>
FO_HD T af_col_factor(T c) {
  if constexpr (kTorch) return c;
  else return T(1) / std::sqrt(c);
}
// torch: the per-matrix denominator max(mean R, eps1) (clamp(min=eps1): a NaN mean stays NaN)
template <class T>
FO_HD T af_row_den(T mean, double eps1) {
  return mean < T(eps1) ? T(eps1) : mean;
}

// u of a factored element from its row factor rf, col factor cf and (torch) row denominator rd.
template <bool kTorch, class T>
FO_HD T af_factored_u(T g, T rf, T cf, T rd, T floor) {
  if constexpr (kTorch) {
    T v = (rf * cf) / rd;
    v = v < floor ? floor : v;
    return (T(1) / std::sqrt(v)) * g;
  } else {
    return (rf * cf) * g;
  }
}

// Unfactored: the new V from the old one and g (pass 2 stores it) ...
template <bool kTorch, class T>
FO_HD T af_var_update(T old, T g, const AfElemCtx<T>& c) {
  T gg = g * g;
  if constexpr (!kTorch) gg = gg + c.floor;  // transformers: eps1 added (floor holds eps1 here)
  return af_ema<kTorch>(old, gg, c);
}
// ... and u from it.
template <bool kTorch, class T>
FO_HD T af_var_u(T v, T g, const AfElemCtx<T>& c) {
  if constexpr (kTorch) {
    const T vc = v < c.floor ? c.floor : v;
    return (T(1) / std::sqrt(vc)) * g;
  } else {
    return (T(1) / std::sqrt(v)) * g;
  }
}

// Pass 3 on one element: the new param from p and u (m: the momentum state with kBeta1, updated).
template <bool kTorch, bool kBeta1, class T>
FO_HD T af_apply(T p, T u, T* m, const AfElemCtx<T>& c) {
  if constexpr (kTorch) {
    p = p * c.decay;
    return p + c.neg_alpha_over_clip * u;
  } else {
    T upd = (u / c.clipdiv) * c.alpha;
    if constexpr (kBeta1) {
      upd = *m * c.beta1 + c.one_minus_beta1 * upd;
      *m = upd;
    }
    p = p * c.decay;
    return p - upd;
  }
}

// The clip divisor max(1, RMS(u)/d) from sum u^2 over a tensor (clamp(min=1): NaN stays NaN).
FO_HD double af_clipdiv(double sum_u2, int64_t numel, double clip) {
  const double rms_u = std::sqrt(sum_u2) / std::sqrt(double(numel));
  double d = rms_u / clip;
  if (!(d > 1.0) && d == d) d = 1.0;
  return d;
}

// Sets the pass-3 fields of the ctx from the clip divisor.
template <bool kTorch, class T>
FO_HD void af_set_clip(AfElemCtx<T>& c, const AfScalars& s, double clipdiv) {
  if constexpr (kTorch) c.neg_alpha_over_clip = T(-(s.alpha / clipdiv));
  else c.clipdiv = T(clipdiv);  // transformers: u / divisor, then * alpha
}

}  // namespace fusedopt
