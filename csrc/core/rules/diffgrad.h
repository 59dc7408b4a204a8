// diffGrad (Dubey et al. 2019), semantics of the authors' diffGrad_v2.py (docs/algorithms.md §10,
// §25 items 1, 8): the friction coefficient compares the previous step's gradient (a copy, not
// the v1 alias that made it 0.5 forever) with the current one.
//   g += wd*p (L2; the decayed g is what g_prev keeps);
//   m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2;
//   xi = 1/(1 + exp(-|g_prev - g|))  (in [0.5, 1); step 1: g_prev = 0, xi = sigmoid(|g_1|));  g_prev = g;
//   p -= lr*sqrt(bc2)/bc1 * (m*xi) / (sqrt(v) + eps)                                    (E2)
// exp is core/vecmath.h's exp_t: float arithmetic for float elements (within ~2 ulp; xi only scales
// the step, never a state), double for double elements.
#pragma once
#include <cmath>

#include "../numeric.h"
#include "../rule_facts.h"
#include "common.h"
#include "../vecmath.h"

namespace fusedopt::rules {

struct DiffGrad {
  static constexpr const char* kStates = "exp_avg, +exp_avg_sq, previous_grad";
  static constexpr HyperDecl kHyper[] = {{"beta1", 0.9}, {"beta2", 0.999}, {"eps", 1e-8}, {"weight_decay", 0.0}};
  static constexpr int kNumVariants = 1;
  FO_HD static constexpr int num_states(int) { return 3; }

  template <class T>
  struct Ctx {
    MulAddEma<T> ema1, ema2;
    T neg_step_size, eps, l2;
  };

  template <class T>
  FO_HD static Ctx<T> make(const double* h, double lr, double step, int) {
    const double b1 = h[0], b2 = h[1], eps = h[2], wd = h[3];
    Ctx<T> c;
    const double bc1 = 1.0 - std::pow(b1, step);
    const double bc2 = 1.0 - std::pow(b2, step);
    c.neg_step_size = T(-(lr * std::sqrt(bc2) / bc1));
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
    T v = c.ema2.sq(s[1], g);
    T denom = fo_sqrt(v) + c.eps;
    T d = s[2] - g;
    d = d < T(0) ? -d : d;
    T e = exp_t<T>(-d);
    T xi = T(1) / (T(1) + e);
    s[0] = m;
    s[1] = v;
    s[2] = g;
    p = p + c.neg_step_size * ((m * xi) / denom);
  }
};

}  // namespace fusedopt::rules
