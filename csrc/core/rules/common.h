// Pieces several rules share, so each rule header states only what is its own.
#pragma once
#include "../numeric.h"

namespace fusedopt::rules {

// torch-style weight decay: L2 (g += wd*p) or decoupled (p *= 1 - lr*wd, before the step).
// Branch-free in update(): the unused term is the identity (exact for finite p).
template <class T>
struct WeightDecay {
  T decay, l2;
  FO_HD static WeightDecay make(double lr, double wd, bool decoupled) {
    return {decoupled ? T(1.0 - lr * wd) : T(1), decoupled ? T(0) : T(wd)};
  }
  FO_HD void apply(T& p, T& g) const {
    p = p * decay;
    g = g + l2 * p;
  }
};

// torch's `m.lerp_(g, 1 - beta)` for a first moment, with torch's two-sided lerp formula.
template <class T>
struct Ema {
  T w, one_minus_w;
  bool w_small;
  FO_HD static Ema make(double beta) { return with_weight(1.0 - beta); }
  // torch's `x.lerp_(y, w)` with the weight itself given (Schedule-Free's y.lerp_(z, ckp1)).
  FO_HD static Ema with_weight(double weight) {
    Ema e;
    e.w = T(weight);
    e.one_minus_w = T(1.0 - double(e.w));
    e.w_small = weight < 0.5;
    return e;
  }
  FO_HD T operator()(T m, T g) const { return lerp_torch(m, g, w, one_minus_w, w_small); }
};

// The authors' codes' moment update `x.mul_(beta).add_(y, alpha=1-beta)` (not torch's lerp):
// x*beta + (1-beta)*y, and the second-moment form `x.mul_(beta).addcmul_(y, y, value=1-beta)`:
// x*beta + ((1-beta)*y)*y, in that evaluation order.
template <class T>
struct MulAddEma {
  T beta, w;
  FO_HD static MulAddEma make(double b) { return {T(b), T(1.0 - b)}; }
  FO_HD T operator()(T x, T y) const { return x * beta + w * y; }
  FO_HD T sq(T x, T y) const { return x * beta + w * y * y; }
};

}  // namespace fusedopt::rules
