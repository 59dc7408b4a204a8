// Adagrad (Duchi, Hazan, Singer 2011), torch.optim.Adagrad semantics (docs/algorithms.md §2):
//   clr = lr / (1 + (t-1) lr_decay);  g += wd p (L2);  sum += g^2;  p -= clr g / (sqrt(sum) + eps).
// Rounding as torch's CPU kernels (add(alpha=) / addcmul: one fused multiply-add, fo_fma).
// `sum` starts at initial_accumulator_value (the Python class fills it when it creates the state).
#pragma once
#include <cmath>

#include "../numeric.h"
#include "../rule_facts.h"

namespace fusedopt::rules {

struct Adagrad {
  static constexpr const char* kStates = "+sum";
  static constexpr HyperDecl kHyper[] = {{"lr_decay", 0.0}, {"weight_decay", 0.0}, {"eps", 1e-10}};
  static constexpr double kLr = 1e-2;
  static constexpr int kNumVariants = 1;
  FO_HD static constexpr int num_states(int) { return 1; }

  template <class T>
  struct Ctx {
    T neg_clr, l2, eps;
  };

  template <class T>
  FO_HD static Ctx<T> make(const double* h, double lr, double step, int) {
    Ctx<T> c;
    c.neg_clr = T(-(lr / (1.0 + (step - 1.0) * h[0])));
    c.l2 = T(h[1]);
    c.eps = T(h[2]);
    return c;
  }

  template <int V, class T>
  FO_HD static void update(T& p, T g, T* s, const Ctx<T>& c) {
    g = fo_fma(p, c.l2, g);  // grad.add(param, alpha=wd); exact when l2 == 0 and p is finite
    T sum = fo_fma(g, g, s[0]);  // sum.addcmul_(g, g, value=1)
    s[0] = sum;
    p = p + (c.neg_clr * g) / (fo_sqrt(sum) + c.eps);  // param.addcdiv_(g, sqrt(sum) + eps, value=-clr)
  }
};

}  // namespace fusedopt::rules
