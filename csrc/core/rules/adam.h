// Adam (Kingma & Ba) and AdamW (Loshchilov & Hutter), torch.optim semantics.
// docs/algorithms.md §3, §5: epsilon placement E1, L2 (coupled) weight decay by default,
// decoupled (p *= 1 - lr*wd, before the step) with kDecoupled; AMSGrad (variant 1) keeps the max of raw v
// in max_exp_avg_sq.
#pragma once
#include <cmath>

#include "../rule_facts.h"
#include "common.h"

namespace fusedopt::rules {

// The math of Adam and AdamW; the two ops' facts follow.
struct AdamMath {
  static constexpr const char* kStates = "exp_avg, +exp_avg_sq, +max_exp_avg_sq";
  static constexpr FieldDecl kVariant[] = {{"amsgrad", 1}};
  static constexpr int kNumVariants = 2;  // 0: plain, 1: amsgrad
  enum : int { kDecoupled = 1 };  // rule runtime flag
  FO_HD static constexpr int num_states(int variant) { return variant == 1 ? 3 : 2; }

  template <class T>
  struct Ctx {
    WeightDecay<T> wd;
    Ema<T> ema1;
    MulAddEma<T> ema2;
    T neg_step_size, bc2_sqrt, eps;
  };

  template <class T>
  FO_HD static Ctx<T> make(const double* h, double lr, double step, int rflags) {
    const double b1 = h[0], b2 = h[1], eps = h[2], wd = h[3];  // kHyper's order
    const bool decoupled = rflags & kDecoupled;
    Ctx<T> c;
    const double bc1 = 1.0 - std::pow(b1, step);
    const double bc2 = 1.0 - std::pow(b2, step);
    c.neg_step_size = T(-(lr / bc1));
    c.bc2_sqrt = T(std::sqrt(bc2));
    c.ema1 = Ema<T>::make(b1);
    c.ema2 = MulAddEma<T>::make(b2);
    c.eps = T(eps);
    c.wd = WeightDecay<T>::make(lr, wd, decoupled);
    return c;
  }

  template <int V, class T>
  FO_HD static void update(T& p, T g, T* s, const Ctx<T>& c) {
    c.wd.apply(p, g);
    T m = c.ema1(s[0], g);
    T v = c.ema2.sq(s[1], g);
    s[0] = m;
    s[1] = v;
    if constexpr (V == 1) {
      v = max_nan(s[2], v);
      s[2] = v;
    }
    T denom = fo_sqrt(v) / c.bc2_sqrt + c.eps;
    p = p + c.neg_step_size * (m / denom);
  }
};

struct Adam : AdamMath {
  static constexpr HyperDecl kHyper[] = {{"beta1", 0.9}, {"beta2", 0.999}, {"eps", 1e-8}, {"weight_decay", 0.0}};
  static constexpr FlagDecl kFlags[] = {{"decoupled_weight_decay", false}};
};

// AdamW: Adam with decoupled weight decay always on (its own op, fusedopt::adamw_).
struct AdamW : AdamMath {
  static constexpr HyperDecl kHyper[] = {{"beta1", 0.9}, {"beta2", 0.999}, {"eps", 1e-8}, {"weight_decay", 1e-2}};
  template <class T>
  FO_HD static Ctx<T> make(const double* h, double lr, double step, int rflags) {
    return AdamMath::make<T>(h, lr, step, rflags | kDecoupled);
  }
};

}  // namespace fusedopt::rules
