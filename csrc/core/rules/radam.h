// RAdam (Liu et al. 2020), docs/algorithms.md §6, in two variants:
//   variant 0 "torch":    torch.optim.RAdam. Rectified when rho_t > 5:
//                          p -= (m/bc1)*lr * sqrt(bc2)/(sqrt(v)+eps) * r_t, else p -= (m/bc1)*lr.
//                          L2 weight decay, or decoupled (p *= 1 - lr*wd) with kDecoupled.
//   variant 1 "official": LiyuanLucasLiu/RAdam radam.py class RAdam. Rectified when rho_t >= 5:
//                          p += -lr*ss * m/(sqrt(v)+eps), ss = sqrt(bc2*(rho-4)/(rho_inf-4)*(rho-2)/rho*
//                          rho_inf/(rho_inf-2))/bc1; else p += -lr/bc1 * m if degenerated_to_sgd,
//                          else no change at all. Weight decay p += -wd*lr*p, only on steps that update.
// With beta2 = 0.999 both variants rectify first at t = 6 (rho_5 = 4.996, rho_6 = 5.994).
// Each variant mirrors its reference's fp32 operation order (torch: lerp for m; official: mul+add).
// Rule flags: kDecoupled (torch variant), kDegenerate (official variant).
#pragma once
#include <cmath>

#include "../rule_facts.h"
#include "common.h"

namespace fusedopt::rules {

struct RAdam {
  static constexpr const char* kStates = "exp_avg, +exp_avg_sq";
  static constexpr HyperDecl kHyper[] = {{"beta1", 0.9}, {"beta2", 0.999}, {"eps", 1e-8}, {"weight_decay", 0.0}};
  static constexpr FlagDecl kFlags[] = {{"decoupled_weight_decay", false}, {"degenerated_to_sgd", false}};
  static constexpr FieldDecl kVariant[] = {{"variant", 1, "torch|official"}};
  static constexpr int kNumVariants = 2;  // 0: torch, 1: official
  enum : int { kDecoupled = 1, kDegenerate = 2 };
  FO_HD static constexpr int num_states(int) { return 2; }

  template <class T>
  struct Ctx {
    // shared
    MulAddEma<T> ema2;
    T eps;
    bool rect;
    // torch variant
    WeightDecay<T> wd;
    Ema<T> ema1;
    T bc1, lr, bc2_sqrt, r;
    // official variant
    MulAddEma<T> ema1_off;
    T wdc, cst;
    bool rect_off_;
  };

  template <class T>
  FO_HD static Ctx<T> make(const double* h, double lr, double step, int rflags) {
    const double b1 = h[0], b2 = h[1], eps = h[2], wd = h[3];
    Ctx<T> c;
    const double bc1 = 1.0 - std::pow(b1, step);
    const double b2t = std::pow(b2, step);
    const double bc2 = 1.0 - b2t;
    const double rho_inf = 2.0 / (1.0 - b2) - 1.0;
    const double rho_t = rho_inf - 2.0 * step * b2t / bc2;
    c.ema2 = MulAddEma<T>::make(b2);
    c.eps = T(eps);
    // torch
    const bool decoupled = rflags & kDecoupled;
    c.wd = WeightDecay<T>::make(lr, wd, decoupled);
    c.ema1 = Ema<T>::make(b1);
    c.bc1 = T(bc1);
    c.lr = T(lr);
    const bool rect_torch = rho_t > 5.0;
    c.bc2_sqrt = rect_torch ? T(std::pow(bc2, 0.5)) : T(1);
    c.r = rect_torch ? T(std::pow((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t), 0.5))
                     : T(1);
    // official
    c.ema1_off = MulAddEma<T>::make(b1);
    const bool rect_off = rho_t >= 5.0;
    const bool degenerate = rflags & kDegenerate;
    double step_size = -1.0;
    if (rect_off) {
      step_size = std::sqrt(bc2 * (rho_t - 4) / (rho_inf - 4) * (rho_t - 2) / rho_t * rho_inf / (rho_inf - 2)) / bc1;
    } else if (degenerate) {
      step_size = 1.0 / bc1;
    }
    const bool applies = step_size > 0;
    c.cst = applies ? T(-step_size * lr) : T(0);
    c.wdc = (applies && wd != 0.0) ? T(-wd * lr) : T(0);
    // make() does not know the variant: both rectification tests are kept, update<V> picks
    c.rect = rect_torch;
    c.rect_off_ = rect_off;
    return c;
  }

  template <int V, class T>
  FO_HD static void update(T& p, T g, T* s, const Ctx<T>& c) {
    if constexpr (V == 0) {
      c.wd.apply(p, g);
      T m = c.ema1(s[0], g);
      T v = c.ema2.sq(s[1], g);
      s[0] = m;
      s[1] = v;
      T x = (m / c.bc1) * c.lr;
      T adaptive = (T(1) / (fo_sqrt(v) + c.eps)) * c.bc2_sqrt;  // torch: float / tensor = reciprocal * float
      x = (x * self(c.rect, adaptive, T(1))) * c.r;
      p = p - x;
    } else {
      T v = c.ema2.sq(s[1], g);
      T m = c.ema1_off(s[0], g);
      s[0] = m;
      s[1] = v;
      T q = self(c.rect_off_, m / (fo_sqrt(v) + c.eps), m);
      p = p + c.wdc * p;
      p = p + c.cst * q;
    }
  }
};

}  // namespace fusedopt::rules
