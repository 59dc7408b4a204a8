// Adan (Xie et al. 2022, adaptive Nesterov momentum), official sail-sg/Adan adan.py semantics
// (docs/algorithms.md §12, §25.7):
//   * betas are retention factors (0.98, 0.92, 0.99) (the paper's 1 - beta);
//   * g_prev := g_1 at the first step (t == 1, a per-tensor scalar), so the first difference is 0;
//     g_prev is kept negated (state neg_pre_grad = -g_prev), as the official code does;
//   * diff = g - g_prev; m = b1*m + (1-b1)*g; d = b2*d + (1-b2)*diff; z = g + b2*diff;
//     n = b3*n + (1-b3)*z^2; denom = sqrt(n)/sqrt(bc3) + eps (eps outside the root);
//     p -= (lr/bc1)*m/denom; p -= (lr*b2/bc2)*d/denom;
//   * weight decay: prox by default, p = (p - lr*u)/(1 + lr*wd); kNoProx: p *= 1 - lr*wd before.
// Global grad-norm clipping (official adan.py: grads scaled in place before the update): with
// max_grad_norm > 0 the op's global_in holds G2 = sum of squares of all grads of the optimizer
// (reduction engine, core/reduce.h) and every grad is multiplied by
//   clip = min(max_grad_norm / (sqrt(G2) + eps), 1)     (fp32, as the official torch.clamp)
// through grad_factor() (the engine folds it into the per-element grad sign), so m, d, n and the
// stored previous grad all see the clipped grad, as in the official code; .grad itself is untouched.
#pragma once
#include <cmath>

#include "../numeric.h"
#include "../rule_facts.h"
#include "common.h"
#include "../reduce.h"

namespace fusedopt::rules {

struct Adan {
  static constexpr const char* kStates = "exp_avg, +exp_avg_sq, exp_avg_diff, neg_pre_grad";
  static constexpr HyperDecl kHyper[] = {{"beta1", 0.98}, {"beta2", 0.92}, {"beta3", 0.99},
                                         {"eps", 1e-8},   {"weight_decay", 0.0}, {"max_grad_norm", 0.0}};
  static constexpr FlagDecl kFlags[] = {{"no_prox", false}};
  static constexpr int kNumVariants = 1;
  static constexpr int kGlobalIn = 1;  // sum of squares of all grads (read when max_grad_norm > 0)
  enum : int { kNoProx = 1 };  // rule runtime flag
  FO_HD static constexpr int num_states(int) { return 4; }

  template <class T>
  struct Ctx {
    // GCC 12 stops vectorising the fp64 loop when Ctx<double> has more members than 11 T + 1 more
    // (not scalarised: checked with -fopt-info-vec), hence one weight-decay factor and both
    // per-tensor switches packed in `mode` (bit 0: first step, bit 1: no_prox)
    MulAddEma<T> ema1, ema2, ema3;
    T bc3_sqrt, eps, neg_step_size, neg_step_size_diff, wd_factor;  // wd_factor: 1 - lr*wd (no_prox) or 1 + lr*wd (prox)
    int mode;
  };

  template <class T>
  FO_HD static Ctx<T> make(const double* h, double lr, double step, int rflags) {
    const double b1 = h[0], b2 = h[1], b3 = h[2], eps = h[3], wd = h[4];
    const bool no_prox = rflags & kNoProx;
    Ctx<T> c;
    c.ema1 = MulAddEma<T>::make(b1);
    c.ema2 = MulAddEma<T>::make(b2);
    c.ema3 = MulAddEma<T>::make(b3);
    c.bc3_sqrt = T(std::sqrt(1.0 - std::pow(b3, step)));
    c.eps = T(eps);
    c.neg_step_size = T(-(lr / (1.0 - std::pow(b1, step))));
    c.neg_step_size_diff = T(-(lr * b2 / (1.0 - std::pow(b2, step))));
    c.wd_factor = no_prox ? T(1.0 - lr * wd) : T(1.0 + lr * wd);
    c.mode = (step == 1.0 ? 1 : 0) | (no_prox ? 2 : 0);
    return c;
  }

  template <class T>
  FO_HD static Ctx<T> make(const double* h, double lr, double step, int rflags, const RedIn&) {
    return make<T>(h, lr, step, rflags);
  }

  // Factor the engine applies to every grad element (core/reduce.h): the global clip coefficient.
  FO_HD static float grad_factor(const double* h, int, const RedIn& r) {
    const double max_norm = h[5];
    if (r.global == nullptr || !(max_norm > 0.0)) return 1.0f;
    const float c = float(max_norm) / (fo_sqrt(r.global[0]) + float(h[3]));
    return c > 1.0f ? 1.0f : c;  // NaN stays NaN (torch.clamp(max=1))
  }

  template <int V, class T>
  FO_HD static void update(T& p, T g, T* s, const Ctx<T>& c) {
    const bool first = (c.mode & 1) != 0, no_prox = (c.mode & 2) != 0;
    const T neg_prev = self(first, -g, s[3]);
    const T diff = neg_prev + g;
    const T m = c.ema1(s[0], g);
    const T d = c.ema2(s[2], diff);
    const T z = diff * c.ema2.beta + g;
    const T n = c.ema3.sq(s[1], z);
    s[0] = m;
    s[1] = n;
    s[2] = d;
    s[3] = -g;
    const T denom = fo_sqrt(n) / c.bc3_sqrt + c.eps;
    p = p * self(no_prox, c.wd_factor, T(1));  // decoupled decay before the step (no_prox)
    p = p + c.neg_step_size * (m / denom);
    p = p + c.neg_step_size_diff * (d / denom);
    p = p / self(no_prox, T(1), c.wd_factor);  // prox: / (1 + lr*wd); / 1 is exact
  }
};

}  // namespace fusedopt::rules
