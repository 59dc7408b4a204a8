// Adadelta (Zeiler 2012), torch.optim.Adadelta semantics (docs/algorithms.md §2):
//   g += wd p (L2);  v = rho v + (1-rho) g^2;  d = sqrt(u + eps) / sqrt(v + eps) * g;
//   u = rho u + (1-rho) d^2;  p -= lr d   (torch's lr, default 1.0, scales the step).
// Rounding as torch's CPU kernels (add(alpha=) / addcmul: one fused multiply-add, fo_fma).
// The step counter is kept (torch keeps it) but unused by the update. States: v = square_avg, u = acc_delta.
#pragma once
#include <cmath>

#include "../numeric.h"
#include "../rule_facts.h"

namespace fusedopt::rules {

struct Adadelta {
  static constexpr const char* kStates = "+square_avg, +acc_delta";
  static constexpr HyperDecl kHyper[] = {{"rho", 0.9}, {"eps", 1e-6}, {"weight_decay", 0.0}};
  static constexpr double kLr = 1.0;
  static constexpr int kNumVariants = 1;
  FO_HD static constexpr int num_states(int) { return 2; }

  template <class T>
  struct Ctx {
    T rho, one_minus_rho, eps, l2, neg_lr;
  };

  template <class T>
  FO_HD static Ctx<T> make(const double* h, double lr, double, int) {
    Ctx<T> c;
    c.rho = T(h[0]);
    c.one_minus_rho = T(1.0 - h[0]);
    c.eps = T(h[1]);
    c.l2 = T(h[2]);
    c.neg_lr = T(-lr);
    return c;
  }

  template <int V, class T>
  FO_HD static void update(T& p, T g, T* s, const Ctx<T>& c) {
    g = fo_fma(p, c.l2, g);  // grad.add(param, alpha=wd); exact when l2 == 0 and p is finite
    T v = fo_fma(c.one_minus_rho * g, g, s[0] * c.rho);  // v.mul_(rho).addcmul_(g, g, value=1-rho)
    s[0] = v;
    T d = (fo_sqrt(s[1] + c.eps) / fo_sqrt(v + c.eps)) * g;
    s[1] = fo_fma(c.one_minus_rho * d, d, s[1] * c.rho);  // u.mul_(rho).addcmul_(d, d, value=1-rho)
    p = fo_fma(d, c.neg_lr, p);  // param.add_(d, alpha=-lr)
  }
};

}  // namespace fusedopt::rules
