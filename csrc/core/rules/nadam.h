// NAdam (Dozat 2016), torch.optim.NAdam semantics (not a seed paper; users expect it beside Adam).
//   mu_t = beta1 * (1 - 0.5 * 0.96^(t * momentum_decay)),  mu_product_t = prod_{i<=t} mu_i
//   m = lerp(m, g, 1-beta1); v = beta2 v + (1-beta2) g^2; denom = sqrt(v / (1-beta2^t)) + eps
//   p += -lr (1-mu_t) / (1-mu_product_t) * g/denom  +  -lr mu_{t+1} / (1-mu_product_t mu_{t+1}) * m/denom
// mu_product is a per-tensor float32 scalar state (core/aux.h), advanced in float32 as torch does
// (`mu_product *= mu`); L2 weight decay, or decoupled (p *= 1 - lr*wd) with kDecoupled.
#pragma once
#include <cmath>

#include "../rule_facts.h"
#include "common.h"

namespace fusedopt::rules {

struct NAdam {
  static constexpr const char* kStates = "exp_avg, +exp_avg_sq, @mu_product=1";
  static constexpr HyperDecl kHyper[] = {
      {"beta1", 0.9}, {"beta2", 0.999}, {"eps", 1e-8}, {"weight_decay", 0.0}, {"momentum_decay", 4e-3}};
  static constexpr double kLr = 2e-3;
  static constexpr FlagDecl kFlags[] = {{"decoupled_weight_decay", false}};
  static constexpr int kNumVariants = 1;
  static constexpr bool kHasAux = true;
  enum : int { kDecoupled = 1 };
  FO_HD static constexpr int num_states(int) { return 2; }

  FO_HD static double mu(const double* h, double step) {
    return h[0] * (1.0 - 0.5 * std::pow(0.96, step * h[4]));
  }

  FO_HD static float advance_aux(const double* h, double step, float mu_product) {
    return mu_product * float(mu(h, step));
  }

  template <class T>
  struct Ctx {
    WeightDecay<T> wd;
    Ema<T> ema1;
    MulAddEma<T> ema2;
    T bc2, eps, coef_g, coef_m;
  };

  template <class T>
  FO_HD static Ctx<T> make(const double* h, double lr, double step, int rflags, double mu_product) {
    const double b1 = h[0], b2 = h[1], eps = h[2], wd = h[3];
    const bool decoupled = rflags & kDecoupled;
    Ctx<T> c;
    c.wd = WeightDecay<T>::make(lr, wd, decoupled);
    c.ema1 = Ema<T>::make(b1);
    c.ema2 = MulAddEma<T>::make(b2);
    c.bc2 = T(1.0 - std::pow(b2, step));
    c.eps = T(eps);
    const double mu_t = mu(h, step);
    const double mu_next = mu(h, step + 1.0);
    c.coef_g = T(-lr * (1.0 - mu_t) / (1.0 - mu_product));
    c.coef_m = T((-lr * mu_next) / (1.0 - mu_product * mu_next));
    return c;
  }

  template <int V, class T>
  FO_HD static void update(T& p, T g, T* s, const Ctx<T>& c) {
    c.wd.apply(p, g);
    T m = c.ema1(s[0], g);
    T v = c.ema2.sq(s[1], g);
    s[0] = m;
    s[1] = v;
    T denom = fo_sqrt(v / c.bc2) + c.eps;
    p = p + c.coef_g * (g / denom);
    p = p + c.coef_m * (m / denom);
  }
};

}  // namespace fusedopt::rules
