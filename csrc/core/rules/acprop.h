// ACProp (Zhuang et al. 2021, momentum centering and asynchronous update), docs/algorithms.md §8 and
// §25 items 2, 5. The official optimizers/ACProp.py was not retrievable: these are the spec's
// equations, with the official flags (weight_decouple, fixed_decay, rectify, degenerated_to_sgd,
// amsgrad, momentum_update). Step t (1-based), bc1 = 1 - b1^t:
//   weight decay as AdaBelief: decoupled p *= 1 - lr*wd (kFixedDecay: 1 - wd) first, or L2 g += wd*p;
//   m = b1*m + (1-b1)*g;
//   t == 1: p -= lr * m/bc1 (= lr*g: plain SGD, s is still 0), whatever rectify says;
//   t > 1: s += eps in place (stored); the denominator uses s = s_{t-1} (+eps), independent of g_t:
//     not rectified: p -= lr * num / (sqrt(s)/sqrt(1 - b2^(t-1)) + eps), num = g, or m/bc1 with
//       kMomentumUpdate;
//     rectified (kRectify): rho_t from t (not t-1), threshold rho_t >= 5 (as adabelief-pytorch):
//       p -= lr * r_t*sqrt(1-b2^t)/bc1 * num / (sqrt(s) + eps), num = g*bc1, or m with kMomentumUpdate;
//       below the threshold p -= lr*m/bc1 with kDegenerate, else no update;
//   after the parameter update: s = b2*s + (1-b2)*(g - m)^2.
// amsgrad (variant 1; not in the spec: chosen by analogy with AdaBelief 0.2.1): smax = max(smax, s)
// after the +eps, used by the unrectified branch only.
#pragma once
#include <cmath>

#include "../numeric.h"
#include "../vecmath.h"
#include "adabelief.h"

namespace fusedopt::rules {

struct ACProp {
  static constexpr const char* kStates = "exp_avg, +exp_avg_var, +max_exp_avg_var";
  static constexpr HyperDecl kHyper[] = {{"beta1", 0.9}, {"beta2", 0.999}, {"eps", 1e-16}, {"weight_decay", 0.0}};
  static constexpr FlagDecl kFlags[] = {{"weight_decouple", true}, {"fixed_decay", false}, {"rectify", true},
                                        {"degenerated_to_sgd", true}, {"momentum_update", false}};
  static constexpr FieldDecl kVariant[] = {{"amsgrad", 1}};
  static constexpr int kNumVariants = 2;  // 0: plain, 1: amsgrad
  enum : int { kDecoupled = 1, kFixedDecay = 2, kRectify = 4, kDegenerate = 8, kMomentumUpdate = 16 };
  FO_HD static constexpr int num_states(int variant) { return variant == 1 ? 3 : 2; }

  template <class T>
  struct Ctx {
    MulAddEma<T> ema1, ema2;
    T decay, l2, eps, add_eps, bc2_sqrt, neg_adaptive, neg_sgd;
    bool adaptive, use_max, num_is_m;
  };

  template <class T>
  FO_HD static Ctx<T> make(const double* h, double lr, double step, int rflags) {
    const double b1 = h[0], b2 = h[1], eps = h[2], wd = h[3];
    const bool decoupled = rflags & kDecoupled, fixed = rflags & kFixedDecay;
    const bool rectify = rflags & kRectify, degenerate = rflags & kDegenerate;
    const bool mom = rflags & kMomentumUpdate;
    Ctx<T> c;
    c.decay = decoupled ? T(fixed ? 1.0 - wd : 1.0 - lr * wd) : T(1);
    c.l2 = decoupled ? T(0) : T(wd);
    c.ema1 = MulAddEma<T>::make(b1);
    c.ema2 = MulAddEma<T>::make(b2);
    c.eps = T(eps);
    c.num_is_m = mom;
    const bool first = step <= 1.0;
    const double bc1 = 1.0 - std::pow(b1, step);
    c.add_eps = first ? T(0) : T(eps);
    c.adaptive = false;
    c.use_max = false;
    c.bc2_sqrt = T(1);
    c.neg_adaptive = T(0);
    c.neg_sgd = T(0);
    if (first) {
      c.neg_sgd = T(-(lr / bc1));
    } else if (!rectify) {
      c.adaptive = true;
      c.use_max = true;
      c.bc2_sqrt = T(std::sqrt(1.0 - std::pow(b2, step - 1.0)));
      c.neg_adaptive = T(mom ? -(lr / bc1) : -lr);
    } else {
      double ss = 0.0;
      c.adaptive = belief_rectified(b1, b2, step, &ss);
      c.neg_adaptive = T(-(lr * ss * (mom ? 1.0 : bc1)));
      if (!c.adaptive && degenerate) c.neg_sgd = T(-(lr / bc1));
    }
    return c;
  }

  template <int V, class T>
  FO_HD static void update(T& p, T g, T* s, const Ctx<T>& c) {
    p = p * c.decay;
    g = g + c.l2 * p;
    T m = c.ema1(s[0], g);
    T v = s[1] + c.add_eps;  // s_{t-1} + eps, stored (official in-place add)
    T vd = v;
    if constexpr (V == 1) {
      T vm = max_nan(s[2], v);
      s[2] = vm;
      vd = bsel(c.use_max, vm, v);
    }
    T num = bsel(c.num_is_m, m, g);
    T denom = fo_sqrt(vd) / c.bc2_sqrt + c.eps;
    T pa = p + c.neg_adaptive * (num / denom);
    T ps = p + c.neg_sgd * m;
    p = bsel(c.adaptive, pa, ps);
    T r = g - m;
    s[0] = m;
    s[1] = c.ema2.sq(v, r);
  }
};

}  // namespace fusedopt::rules
