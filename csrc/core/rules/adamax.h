// AdaMax (Kingma & Ba §7.1), torch.optim semantics (docs/algorithms.md §4):
// eps inside the max, u = max(beta2*u, |g| + eps) (state exp_inf); no bias correction of u; L2 weight decay.
#pragma once
#include <cmath>

#include "../rule_facts.h"
#include "common.h"

namespace fusedopt::rules {

struct Adamax {
  static constexpr const char* kStates = "exp_avg, +exp_inf";
  static constexpr HyperDecl kHyper[] = {{"beta1", 0.9}, {"beta2", 0.999}, {"eps", 1e-8}, {"weight_decay", 0.0}};
  static constexpr double kLr = 2e-3;
  static constexpr int kNumVariants = 1;
  FO_HD static constexpr int num_states(int) { return 2; }

  template <class T>
  struct Ctx {
    WeightDecay<T> wd;
    Ema<T> ema1;
    T neg_clr, beta2, eps;
  };

  template <class T>
  FO_HD static Ctx<T> make(const double* h, double lr, double step, int) {
    const double b1 = h[0], b2 = h[1], eps = h[2], wd = h[3];
    Ctx<T> c;
    c.neg_clr = T(-(lr / (1.0 - std::pow(b1, step))));
    c.ema1 = Ema<T>::make(b1);
    c.beta2 = T(b2);
    c.eps = T(eps);
    c.wd = WeightDecay<T>::make(lr, wd, false);
    return c;
  }

  template <int V, class T>
  FO_HD static void update(T& p, T g, T* s, const Ctx<T>& c) {
    c.wd.apply(p, g);
    T m = c.ema1(s[0], g);
    T u = max_nan(s[1] * c.beta2, (g < T(0) ? -g : g) + c.eps);
    s[0] = m;
    s[1] = u;
    p = p + c.neg_clr * (m / u);
  }
};

}  // namespace fusedopt::rules
