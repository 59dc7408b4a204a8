// Positive-Negative Momentum (Xie et al. 2021), PNM and AdaPNM, authors' code semantics
// (zeke-xie/Positive-Negative-Momentum pnm_optim/pnm.py, adapnm.py; docs/algorithms.md §11, §25.6).
//
// Two momentum buffers a (s0) and b (s1). Odd t: (pos, neg) = (a, b); even t: (pos, neg) = (b, a).
// Only pos is updated: pos = beta1^2*pos + (1-beta1^2)*g, and the step uses
//   delta = ((1+beta0)*pos - beta0*neg) / sqrt((1+beta0)^2 + beta0^2).
// The parity of t is a per-tensor scalar (make): on even steps the engines swap the two lists
// (core/traits.h swap01), so update() always updates s[0] = pos and only reads s[1] = neg, which the
// engines do not store back (read_only_states).
// Weight decay: decoupled (p *= 1 - lr*wd, before the step; flag kDecoupled, the default) or L2
// (g += wd*p) without it. The references add L2 into p.grad in place; we do not touch the grad.
//
// PNM:    p -= lr*delta. No bias correction.
// AdaPNM: v = beta2*v + (1-beta2)*g^2; vmax = max(vmax, v) (amsgrad, variant 1, the default);
//   p -= (lr/bc1) * delta / (sqrt(v or vmax)/sqrt(bc2) + eps) with bc1 = 1 - beta1^t: the authors'
//   code debiases with beta1^t although the EMA uses beta1^2 (§25.6: kept).
#pragma once
#include <cmath>

#include "../numeric.h"
#include "../rule_facts.h"
#include "common.h"

namespace fusedopt::rules {

struct Pnm {
  static constexpr const char* kStates = "pos_momentum, neg_momentum";
  static constexpr HyperDecl kHyper[] = {{"beta1", 0.9}, {"beta0", 1.0}, {"weight_decay", 0.0}};
  static constexpr FlagDecl kFlags[] = {{"decoupled", true}};
  static constexpr int kNumVariants = 1;
  enum : int { kDecoupled = 1 };  // rule runtime flag: decoupled weight decay (else L2)
  FO_HD static constexpr int num_states(int) { return 2; }
  static constexpr unsigned read_only_states(int) { return 2u; }  // s1 = neg

  template <class T>
  struct Ctx {
    MulAddEma<T> ema1;  // beta1^2
    T pos_coef, neg_coef, inv_norm, neg_lr, l2, decay;
    bool odd;
  };
  template <class T>
  FO_HD static bool swap01(const Ctx<T>& c) { return !c.odd; }

  template <class T>
  FO_HD static Ctx<T> make(const double* h, double lr, double step, int rflags) {
    const double b1 = h[0], b0 = h[1], wd = h[2];
    const bool coupled = !(rflags & kDecoupled);
    Ctx<T> c;
    c.ema1 = MulAddEma<T>::make(b1 * b1);
    c.pos_coef = T(1.0 + b0);
    c.neg_coef = T(-b0);
    c.inv_norm = T(1.0 / std::sqrt((1.0 + b0) * (1.0 + b0) + b0 * b0));
    c.neg_lr = T(-lr);
    c.l2 = coupled ? T(wd) : T(0);
    c.decay = coupled ? T(1) : T(1.0 - lr * wd);
    c.odd = std::fmod(step, 2.0) == 1.0;
    return c;
  }

  template <int V, class T>
  FO_HD static void update(T& p, T g, T* s, const Ctx<T>& c) {
    p = p * c.decay;
    g = g + c.l2 * p;  // l2 == 0 unless coupled (exact for finite p)
    const T pos = c.ema1(s[0], g);
    const T neg = s[1];
    s[0] = pos;
    const T delta = (pos * c.pos_coef + c.neg_coef * neg) * c.inv_norm;
    p = p + c.neg_lr * delta;
  }
};

struct AdaPnm {
  static constexpr const char* kStates = "exp_avg, neg_exp_avg, +exp_avg_sq, +max_exp_avg_sq";
  static constexpr HyperDecl kHyper[] = {
      {"beta1", 0.9}, {"beta2", 0.999}, {"beta0", 1.0}, {"eps", 1e-8}, {"weight_decay", 0.0}};
  static constexpr FlagDecl kFlags[] = {{"decoupled", true}};
  static constexpr FieldDecl kVariant[] = {{"amsgrad", 1, nullptr, 1}};
  static constexpr int kNumVariants = 2;  // 0: plain, 1: amsgrad (max of v)
  enum : int { kDecoupled = 1 };
  FO_HD static constexpr int num_states(int variant) { return variant == 1 ? 4 : 3; }
  static constexpr unsigned read_only_states(int) { return 2u; }  // s1 = neg (as PNM)

  template <class T>
  struct Ctx {
    // GCC 12 stops vectorising the fp64 loop when Ctx<double> has more members than 11 T + 1 more
    // (not scalarised: checked with -fopt-info-vec), hence one weight-decay factor and both
    // per-tensor switches packed in `mode` (bit 0: odd step, bit 1: coupled)
    MulAddEma<T> ema1, ema2;  // beta1^2, beta2
    T pos_coef, neg_coef, inv_norm, neg_step_size, bc2_sqrt, eps,
        wd_factor;  // wd (coupled) or 1 - lr*wd (decoupled)
    int mode;
  };
  template <class T>
  FO_HD static bool swap01(const Ctx<T>& c) { return (c.mode & 1) == 0; }

  template <class T>
  FO_HD static Ctx<T> make(const double* h, double lr, double step, int rflags) {
    const double b1 = h[0], b2 = h[1], b0 = h[2], eps = h[3], wd = h[4];
    const bool coupled = !(rflags & kDecoupled);
    Ctx<T> c;
    c.ema1 = MulAddEma<T>::make(b1 * b1);
    c.ema2 = MulAddEma<T>::make(b2);
    c.pos_coef = T(1.0 + b0);
    c.neg_coef = T(-b0);
    c.inv_norm = T(1.0 / std::sqrt((1.0 + b0) * (1.0 + b0) + b0 * b0));
    c.neg_step_size = T(-(lr / (1.0 - std::pow(b1, step))));  // bc1 = 1 - beta1^t (not beta1^(2t))
    c.bc2_sqrt = T(std::sqrt(1.0 - std::pow(b2, step)));
    c.eps = T(eps);
    c.wd_factor = coupled ? T(wd) : T(1.0 - lr * wd);
    c.mode = (std::fmod(step, 2.0) == 1.0 ? 1 : 0) | (coupled ? 2 : 0);
    return c;
  }

  template <int V, class T>
  FO_HD static void update(T& p, T g, T* s, const Ctx<T>& c) {
    const bool coupled = (c.mode & 2) != 0;
    p = p * self(coupled, T(1), c.wd_factor);
    g = g + self(coupled, c.wd_factor, T(0)) * p;  // + 0*p unless coupled (exact for finite p)
    const T pos = c.ema1(s[0], g);  // slots swapped on even steps (swap01)
    const T neg = s[1];
    s[0] = pos;
    T v = c.ema2.sq(s[2], g);
    s[2] = v;
    if constexpr (V == 1) {
      v = max_nan(s[3], v);
      s[3] = v;
    }
    const T denom = fo_sqrt(v) / c.bc2_sqrt + c.eps;
    const T pn = (pos * c.pos_coef + c.neg_coef * neg) * c.inv_norm;
    p = p + c.neg_step_size * (pn / denom);
  }
};

}  // namespace fusedopt::rules
