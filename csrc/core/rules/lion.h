// Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"), lucidrains
// lion-pytorch semantics:
//   p *= 1 - lr*wd (decoupled, before the step);
//   u = sign(b1*m + (1-b1)*g); p -= lr*u; m = b2*m + (1-b2)*g.
// sign(0) = 0 and sign(NaN) = NaN, as torch.sign. No bias correction, no eps.
// lucidrains' decoupled_weight_decay (wd divided by the initial lr) is resolved in Python:
// the kernel gets the effective wd.
#pragma once
#include <cmath>

#include "../numeric.h"
#include "../rule_facts.h"
#include "common.h"

namespace fusedopt::rules {

struct Lion {
  static constexpr const char* kStates = "exp_avg";
  static constexpr HyperDecl kHyper[] = {{"beta1", 0.9}, {"beta2", 0.99}, {"weight_decay", 0.0}};
  static constexpr double kLr = 1e-4;
  static constexpr int kNumVariants = 1;
  FO_HD static constexpr int num_states(int) { return 1; }

  template <class T>
  struct Ctx {
    MulAddEma<T> ema1, ema2;  // the interpolation (beta1) and the momentum update (beta2)
    T neg_lr, decay;
  };

  template <class T>
  FO_HD static Ctx<T> make(const double* h, double lr, double, int) {
    const double b1 = h[0], b2 = h[1], wd = h[2];
    Ctx<T> c;
    c.ema1 = MulAddEma<T>::make(b1);
    c.ema2 = MulAddEma<T>::make(b2);
    c.neg_lr = T(-lr);
    c.decay = T(1.0 - lr * wd);
    return c;
  }

  template <int V, class T>
  FO_HD static void update(T& p, T g, T* s, const Ctx<T>& c) {
    p = p * c.decay;
    const T m = s[0];
    const T x = c.ema1(m, g);
    T u = self(x > T(0), T(1), T(0)) - self(x < T(0), T(1), T(0));
    u = self(x != x, x, u);  // NaN stays NaN
    p = p + c.neg_lr * u;
    s[0] = c.ema2(m, g);
  }
};

}  // namespace fusedopt::rules
