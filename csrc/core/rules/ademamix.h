// AdEMAMix (Pagliardini, Ablin, Grangier 2024, "The AdEMAMix Optimizer: Better, Faster, Older"),
// bitsandbytes' AdEMAMix semantics (docs/algorithms.md §29): Adam's fast EMA m1 (bias-corrected) plus a
// slow EMA m2 (not corrected) weighted by alpha, over Adam's denominator; decoupled weight decay first:
//   p *= 1 - lr*wd;  m1 = b1 m1 + (1-b1) g;  m2 = b3t m2 + (1-b3t) g;  nu = b2 nu + (1-b2) g^2;
//   p -= lr * (m1/(1 - b1^t) + alpha_t m2) / (sqrt(nu)/sqrt(1 - b2^t) + eps).
// The schedulers (per tensor from its step t, in double, as bitsandbytes' Python does):
//   alpha_t = min(t alpha / t_alpha, alpha) when t_alpha > 0, else alpha;
//   b3t = min(exp(ln b1 ln b3 / ((1 - t/T) ln b3 + (t/T) ln b1)), b3) with T = t_beta3 > 0, else b3.
#pragma once
#include <cmath>

#include "../rule_facts.h"
#include "common.h"

namespace fusedopt::rules {

struct AdEMAMix {
  static constexpr const char* kStates = "m1, m2, +nu";
  static constexpr HyperDecl kHyper[] = {{"beta1", 0.9}, {"beta2", 0.999}, {"beta3", 0.9999}, {"alpha", 5.0},
                                         {"t_alpha", 0.0}, {"t_beta3", 0.0}, {"eps", 1e-8}, {"weight_decay", 1e-2}};
  static constexpr int kNumVariants = 1;
  FO_HD static constexpr int num_states(int) { return 3; }

  template <class T>
  struct Ctx {
    MulAddEma<T> ema1, ema2, ema3;
    T decay, neg_lr, bc1, bc2_sqrt, alpha, eps;
  };

  template <class T>
  FO_HD static Ctx<T> make(const double* h, double lr, double step, int) {
    const double b1 = h[0], b2 = h[1], b3 = h[2], alpha = h[3], t_alpha = h[4], t_beta3 = h[5];
    double a = alpha, b3t = b3;
    if (t_alpha > 0.0) a = step * alpha / t_alpha < alpha ? step * alpha / t_alpha : alpha;
    if (t_beta3 > 0.0) {
      const double l1 = std::log(b1), l3 = std::log(b3), s = step / t_beta3;
      const double b = std::exp((l1 * l3) / ((1.0 - s) * l3 + s * l1));
      b3t = b < b3 ? b : b3;
    }
    Ctx<T> c;
    c.ema1 = MulAddEma<T>::make(b1);
    c.ema2 = MulAddEma<T>::make(b2);
    c.ema3 = MulAddEma<T>::make(b3t);
    c.decay = T(1.0 - lr * h[7]);
    c.neg_lr = T(-lr);
    c.bc1 = T(1.0 - std::pow(b1, step));
    c.bc2_sqrt = T(std::sqrt(1.0 - std::pow(b2, step)));
    c.alpha = T(a);
    c.eps = T(h[6]);
    return c;
  }

  template <int V, class T>
  FO_HD static void update(T& p, T g, T* s, const Ctx<T>& c) {
    p = p * c.decay;
    const T m1 = c.ema1(s[0], g);
    const T m2 = c.ema3(s[1], g);
    const T nu = c.ema2.sq(s[2], g);
    s[0] = m1;
    s[1] = m2;
    s[2] = nu;
    const T denom = fo_sqrt(nu) / c.bc2_sqrt + c.eps;
    p = p + c.neg_lr * ((m1 / c.bc1 + c.alpha * m2) / denom);
  }
};

}  // namespace fusedopt::rules
