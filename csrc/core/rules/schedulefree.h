// Schedule-Free AdamW (Defazio et al. 2024, "The Road Less Scheduled"), the authors' schedulefree
// AdamWScheduleFree semantics (docs/algorithms.md §30). The param holds y (train mode); z is the base
// sequence and x, the average the model is evaluated at, is never stored (the class's eval() moves
// the param to x, train() back to y). One step, in the authors' order:
//   v = b2 v + (1-b2) g^2;  gn = g / (sqrt(v / (1 - b2^t)) + eps) + wd y;
//   y = lerp(y, z, c);  y += lr (b1 (1 - c) - 1) gn;  z -= lr gn,
// with lr the scheduled lr (warmup) and c = ckp1, the averaging weight of this step (weight / weight_sum),
// both computed per param group by the caller (python/fusedopt/optim/schedulefree.py), as the authors do.
// z starts as a copy of the param; v at 0. The grad itself is not modified (the authors divide it in place).
#pragma once
#include <cmath>

#include "../rule_facts.h"
#include "common.h"

namespace fusedopt::rules {

struct ScheduleFreeAdamW {
  static constexpr const char* kStates = "z=param, +exp_avg_sq";
  static constexpr HyperDecl kHyper[] = {
      {"beta1", 0.9}, {"beta2", 0.999}, {"eps", 1e-8}, {"weight_decay", 0.0}, {"ckp1", 1.0}};
  static constexpr double kLr = 2.5e-3;
  static constexpr int kNumVariants = 1;
  FO_HD static constexpr int num_states(int) { return 2; }

  template <class T>
  struct Ctx {
    MulAddEma<T> ema2;
    Ema<T> to_z;  // y.lerp_(z, ckp1)
    T bc2, eps, wd, y_coef, neg_lr;
  };

  template <class T>
  FO_HD static Ctx<T> make(const double* h, double lr, double step, int) {
    const double b1 = h[0], b2 = h[1], ckp1 = h[4];
    Ctx<T> c;
    c.ema2 = MulAddEma<T>::make(b2);
    c.to_z = Ema<T>::with_weight(ckp1);
    c.bc2 = T(1.0 - std::pow(b2, step));
    c.eps = T(h[2]);
    c.wd = T(h[3]);
    c.y_coef = T(lr * (b1 * (1.0 - ckp1) - 1.0));
    c.neg_lr = T(-lr);
    return c;
  }

  template <int V, class T>
  FO_HD static void update(T& p, T g, T* s, const Ctx<T>& c) {
    const T v = c.ema2.sq(s[1], g);
    s[1] = v;
    const T gn = g / (fo_sqrt(v / c.bc2) + c.eps) + c.wd * p;  // + 0 * y is exact for finite y
    const T z = s[0];
    p = c.to_z(p, z);
    p = p + c.y_coef * gn;
    s[0] = z + c.neg_lr * gn;
  }
};

}  // namespace fusedopt::rules
