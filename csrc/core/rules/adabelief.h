// AdaBelief (Zhuang et al. 2020), semantics of the official adabelief-pytorch 0.2.1 package
// (docs/algorithms.md §7; §25 items 1, 2):
//   weight decay: decoupled p *= 1 - lr*wd (kFixedDecay: 1 - wd) before everything (applied on every
//     step, also when the rectified branch makes no update), or L2 g += wd*p (kDecoupled off);
//   m = b1*m + (1-b1)*g;  s = b2*s + (1-b2)*(g - m)^2 with the updated m;  s += eps IN PLACE (stored);
//   amsgrad (variant 1): smax = max(smax, s) after the +eps, used by the unrectified branch only;
//   not rectified: p -= lr/bc1 * m / (sqrt(s)/sqrt(bc2) + eps)                       (E1)
//   rectified (kRectify, RAdam rule with the official threshold rho_t >= 5):
//     rho_t >= 5: p -= lr * r_t*sqrt(bc2)/bc1 * m / (sqrt(s) + eps)                  (E2, s not smax)
//     else kDegenerate (degenerated_to_sgd): p -= lr/bc1 * m;  else no update.
// With beta2 = 0.999 the first rectified step is t = 6 (rho_5 = 4.996).
// Flags: kDecoupled (weight_decouple), kFixedDecay, kRectify, kDegenerate (degenerated_to_sgd).
#pragma once
#include <cmath>

#include "../numeric.h"
#include "../rule_facts.h"
#include "../vecmath.h"
#include "common.h"

namespace fusedopt::rules {

// RAdam's rectification of adabelief-pytorch / ACProp: step multiplier r_t*sqrt(1-b2^t)/(1-b1^t)
// when rho_t >= 5 (returns false otherwise). Same operation order as the official code.
FO_HD bool belief_rectified(double b1, double b2, double t, double* step_size) {
  const double b2t = std::pow(b2, t);
  const double n_max = 2.0 / (1.0 - b2) - 1.0;
  const double n = n_max - 2.0 * t * b2t / (1.0 - b2t);
  if (n >= 5.0) {
    *step_size = std::sqrt((1.0 - b2t) * (n - 4.0) / (n_max - 4.0) * (n - 2.0) / n * n_max / (n_max - 2.0)) /
                 (1.0 - std::pow(b1, t));
    return true;
  }
  return false;
}

struct AdaBelief {
  static constexpr const char* kStates = "exp_avg, +exp_avg_var, +max_exp_avg_var";
  static constexpr HyperDecl kHyper[] = {{"beta1", 0.9}, {"beta2", 0.999}, {"eps", 1e-16}, {"weight_decay", 0.0}};
  static constexpr FlagDecl kFlags[] = {
      {"weight_decouple", true}, {"fixed_decay", false}, {"rectify", true}, {"degenerated_to_sgd", true}};
  static constexpr FieldDecl kVariant[] = {{"amsgrad", 1}};
  static constexpr int kNumVariants = 2;  // 0: plain, 1: amsgrad
  enum : int { kDecoupled = 1, kFixedDecay = 2, kRectify = 4, kDegenerate = 8 };
  FO_HD static constexpr int num_states(int variant) { return variant == 1 ? 3 : 2; }

  template <class T>
  struct Ctx {
    MulAddEma<T> ema1, ema2;
    T decay, l2, eps, bc2_sqrt, neg_adaptive, neg_sgd;
    bool adaptive, use_max;
  };

  template <class T>
  FO_HD static Ctx<T> make(const double* h, double lr, double step, int rflags) {
    const double b1 = h[0], b2 = h[1], eps = h[2], wd = h[3];
    const bool decoupled = rflags & kDecoupled, fixed = rflags & kFixedDecay;
    const bool rectify = rflags & kRectify, degenerate = rflags & kDegenerate;
    Ctx<T> c;
    c.decay = decoupled ? T(fixed ? 1.0 - wd : 1.0 - lr * wd) : T(1);
    c.l2 = decoupled ? T(0) : T(wd);
    c.ema1 = MulAddEma<T>::make(b1);
    c.ema2 = MulAddEma<T>::make(b2);
    c.eps = T(eps);
    const double bc1 = 1.0 - std::pow(b1, step);
    const double bc2 = 1.0 - std::pow(b2, step);
    c.neg_sgd = T(0);
    if (!rectify) {
      c.adaptive = true;
      c.use_max = true;
      c.bc2_sqrt = T(std::sqrt(bc2));
      c.neg_adaptive = T(-(lr / bc1));
    } else {
      double ss = 0.0;
      c.adaptive = belief_rectified(b1, b2, step, &ss);
      c.use_max = false;
      c.bc2_sqrt = T(1);
      c.neg_adaptive = T(-ss * lr);
      if (!c.adaptive && degenerate) c.neg_sgd = T(-(1.0 / bc1) * lr);
    }
    return c;
  }

  template <int V, class T>
  FO_HD static void update(T& p, T g, T* s, const Ctx<T>& c) {
    p = p * c.decay;
    g = g + c.l2 * p;
    T m = c.ema1(s[0], g);
    T r = g - m;
    T v = c.ema2.sq(s[1], r);
    v = v + c.eps;  // stored: eps accumulates in the state (official semantics)
    s[0] = m;
    s[1] = v;
    T vd = v;
    if constexpr (V == 1) {
      T vm = max_nan(s[2], v);
      s[2] = vm;
      vd = bsel(c.use_max, vm, v);
    }
    T denom = fo_sqrt(vd) / c.bc2_sqrt + c.eps;
    T pa = p + c.neg_adaptive * (m / denom);
    T ps = p + c.neg_sgd * m;
    p = bsel(c.adaptive, pa, ps);
  }
};

}  // namespace fusedopt::rules
