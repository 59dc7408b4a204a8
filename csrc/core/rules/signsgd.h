// Generalized signSGD (Crawshaw et al. 2022), semantics of the official
// zhenxun-zhuang/Generalized-SignSGD cifar10/generalized_signsgd.py (docs/algorithms.md §9, §25 item 9):
// the second moment tracks the MOMENTUM (squared), and there is no bias correction by default.
//   g += wd*p (L2 only);  m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*m^2 (new, uncorrected m);
//   p -= lr * (m/bc1) / (sqrt(v/bc2) + eps),  bc1 = bc2 = 1 unless kBiasCorrection.
// Settings: beta2 -> 1 approaches an Adam-like rule; beta2 = 0 gives m/(|m| + eps):
//   signum = betas (beta, 0), eps = 0 (exactly lr*sign(m) where m != 0; m == 0 gives NaN, as the
//   reference does); plain signSGD = betas (0, 0), eps = 0.
//
// Variant 1 is for beta2 == 0 only (signum, signSGD): v would be (1-0)*m^2 = m^2 every step, so it
// is not kept; the denominator squares the new m instead (the same bits: 0*v + 1*fl(m*m) = fl(m*m)
// for finite v). One state fewer to read and write (20 B/param instead of 28).
#pragma once
#include <cmath>

#include "../numeric.h"
#include "../rule_facts.h"
#include "common.h"

namespace fusedopt::rules {

struct SignSGD {
  static constexpr const char* kStates = "exp_avg, +exp_avg_sq";
  static constexpr HyperDecl kHyper[] = {{"beta1", 0.9}, {"beta2", 0.999}, {"eps", 1e-8}, {"weight_decay", 0.0}};
  static constexpr FlagDecl kFlags[] = {{"use_bias_correction", false}};
  static constexpr FieldDecl kVariant[] = {{"no_exp_avg_sq", 1}};  // for beta2 == 0 only
  static constexpr int kNumVariants = 2;  // 0: general, 1: beta2 == 0 (no exp_avg_sq)
  enum : int { kBiasCorrection = 1 };
  FO_HD static constexpr int num_states(int variant) { return variant == 1 ? 1 : 2; }

  template <class T>
  struct Ctx {
    MulAddEma<T> ema1, ema2;
    T neg_lr, bc1, bc2, eps, l2;
  };

  template <class T>
  FO_HD static Ctx<T> make(const double* h, double lr, double step, int rflags) {
    const double b1 = h[0], b2 = h[1], eps = h[2], wd = h[3];
    const bool corr = rflags & kBiasCorrection;
    Ctx<T> c;
    c.neg_lr = T(-lr);
    c.bc1 = corr ? T(1.0 - std::pow(b1, step)) : T(1);
    c.bc2 = corr ? T(1.0 - std::pow(b2, step)) : T(1);
    c.ema1 = MulAddEma<T>::make(b1);
    c.ema2 = MulAddEma<T>::make(b2);
    c.eps = T(eps);
    c.l2 = T(wd);
    return c;
  }

  template <int V, class T>
  FO_HD static void update(T& p, T g, T* s, const Ctx<T>& c) {
    g = g + c.l2 * p;
    T m = c.ema1(s[0], g);
    T v;
    if constexpr (V == 1) {
      v = m * m;
    } else {
      v = c.ema2.sq(s[1], m);
      s[1] = v;
    }
    s[0] = m;
    T denom = fo_sqrt(v / c.bc2) + c.eps;
    p = p + c.neg_lr * ((m / c.bc1) / denom);
  }
};

}  // namespace fusedopt::rules
