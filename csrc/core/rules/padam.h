// Padam (Chen & Gu, partially adaptive momentum), the base optimizer of GadamX: semantics of
// diegogranziol/Gadam base_optimizers/padam.py (docs/algorithms.md §18; §1 epsilon placement E2):
//   decoupled_wd: p *= 1 - lr*wd before the step; else L2 g += wd*p;
//   m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2;  amsgrad (variant 1, the default): vmax = max(vmax, v), use vmax;
//   p -= lr*sqrt(bc2)/bc1 * m / (sqrt(v) + eps)^(2*partial)
// eps is added BEFORE the power (E2 on the raw root, then the partial exponent), and the bias
// correction is sqrt(bc2), not bc2^partial (the reference's quirk, kept).
// The power: exponent 0.5 (partial = 1/4, the default) is a sqrt and exponent 1 the identity, as in
// torch's pow dispatch; exponent 0.25 (partial = 1/8, GadamX's setting) is sqrt(sqrt(x)) (within
// 1 ulp); others are exp(y*ln x) in double (core/vecmath.h), rounded once.
#pragma once
#include <cmath>

#include "../numeric.h"
#include "../rule_facts.h"
#include "common.h"
#include "../vecmath.h"

namespace fusedopt::rules {

struct Padam {
  // variant bit 0: amsgrad; bits 1-2, the exponent 2*partial: 0 = 0.5 or 1 (sqrt(base) or base, a
  // per-tensor select), 1 = any other (the element-wise pow), 2 = 0.25 (two square roots). The callers
  // set them from `partial`; kinds 0 and 2 must not get another exponent.
  static constexpr const char* kStates = "exp_avg, +exp_avg_sq, +max_exp_avg_sq";
  static constexpr HyperDecl kHyper[] = {
      {"beta1", 0.9}, {"beta2", 0.999}, {"eps", 1e-8}, {"weight_decay", 0.0}, {"partial", 0.25}};
  static constexpr double kLr = 1e-1;
  static constexpr FlagDecl kFlags[] = {{"decoupled_wd", false}};
  static constexpr FieldDecl kVariant[] = {{"amsgrad", 1, nullptr, 1}, {"exponent", 2}};
  static constexpr int kNumVariants = 6;
  enum : int { kDecoupled = 1 };
  FO_HD static constexpr int num_states(int variant) { return (variant & 1) ? 3 : 2; }

  template <class T>
  struct Ctx {
    MulAddEma<T> ema1, ema2;
    T neg_step_size, decay, l2, eps;
    double expo;
    bool expo_half;
  };

  template <class T>
  FO_HD static Ctx<T> make(const double* h, double lr, double step, int rflags) {
    const double b1 = h[0], b2 = h[1], eps = h[2], wd = h[3], partial = h[4];
    const bool decoupled = rflags & kDecoupled;
    Ctx<T> c;
    const double bc1 = 1.0 - std::pow(b1, step);
    const double bc2 = 1.0 - std::pow(b2, step);
    c.neg_step_size = T(-(lr * std::sqrt(bc2) / bc1));
    c.decay = decoupled ? T(1.0 - lr * wd) : T(1);
    c.l2 = decoupled ? T(0) : T(wd);
    c.ema1 = MulAddEma<T>::make(b1);
    c.ema2 = MulAddEma<T>::make(b2);
    c.eps = T(eps);
    c.expo = partial * 2.0;
    c.expo_half = c.expo == 0.5;
    return c;
  }

  template <int V, class T>
  FO_HD static void update(T& p, T g, T* s, const Ctx<T>& c) {
    p = p * c.decay;
    g = g + c.l2 * p;
    T m = c.ema1(s[0], g);
    T v = c.ema2.sq(s[1], g);
    s[0] = m;
    s[1] = v;
    if constexpr ((V & 1) != 0) {
      v = max_nan(s[2], v);
      s[2] = v;
    }
    T base = fo_sqrt(v) + c.eps;
    T denom;
    if constexpr ((V >> 1) == 1) {
      denom = T(pow_pos_d(double(base), c.expo));
    } else if constexpr ((V >> 1) == 2) {
      denom = fo_sqrt(fo_sqrt(base));
    } else {
      denom = bsel(c.expo_half, fo_sqrt(base), base);
    }
    p = p + c.neg_step_size * (m / denom);
  }
};

}  // namespace fusedopt::rules
