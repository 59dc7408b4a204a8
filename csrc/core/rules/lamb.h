// LAMB (You et al. 2020), NVIDIA apex FusedLAMB semantics (docs/algorithms.md §15), as two passes of
// the element-wise engine around the reduction engine (core/reduce.h):
//   0. (Python) G2 = sum over ALL params of all groups of |g|^2 (unscaled grads): multi_tensor_sumsq;
//   1. Lamb1 (kGlobalIn = 1: G2; kRedOut = 2): clip = G/max_grad_norm if G > max_grad_norm > 0 else 1,
//        g <- g / clip;  [adam_w_mode off: g <- g + wd*p]
//        m = beta1*m + beta3*g  (beta3 = 1 - beta1 with grad_averaging, else 1);  v = beta2*v + (1-beta2)*g^2
//        u = (m/bc1) / (sqrt(v/bc2) + eps)  [adam_w_mode: u += wd*p]   (bc = 1 - beta^t, or 1 without
//        bias_correction);  per-tensor outputs: sum p^2, sum u^2 (p before the update); nothing is
//        stored (core/traits.h: kWritesParam = false and every state read-only; p, m, v keep their values);
//   2. Lamb2 (kGlobalIn = 1, kRedIn = 2: those sums; kNoStepBump): the same fp32 expressions again
//        from the same inputs give bitwise the m, v and u of pass 1 (whatever the state storage: pass 1
//        never rounded them to it); m and v are stored;
//        ratio = lr * ||p|| / ||u|| if (use_nvlamb or wd != 0) and ||p|| != 0 and ||u|| != 0, else lr;
//        p -= ratio * u.  u is never stored and the grad is not touched (apex writes u into it).
// No clamp of the trust ratio (apex has none). max_grad_norm <= 0 disables clipping (apex would
// divide by 0 there: a documented deviation). The step counter is per param, bumped by pass 1.
#pragma once
#include <cmath>

#include "../numeric.h"
#include "../rule_facts.h"
#include "../reduce.h"

namespace fusedopt::rules {

struct LambCommon {
  static constexpr const char* kStates = "exp_avg, +exp_avg_sq";
  static constexpr HyperDecl kHyper[] = {
      {"beta1", 0.9}, {"beta2", 0.999}, {"eps", 1e-6}, {"weight_decay", 0.01}, {"max_grad_norm", 1.0}};
  static constexpr FlagDecl kFlags[] = {
      {"adam_w_mode", true}, {"bias_correction", true}, {"grad_averaging", true}, {"use_nvlamb", false}};
  static constexpr int kNumVariants = 1;
  enum : int { kAdamW = 1, kBiasCorrection = 2, kGradAveraging = 4, kNvLamb = 8 };
  FO_HD static constexpr int num_states(int) { return 2; }

  template <class T>
  struct Ctx {
    T inv_clip, beta1, beta3, beta2, one_minus_beta2, bc1, bc2, eps, l2, decoupled, neg_ratio;
  };

  template <class T>
  FO_HD static Ctx<T> base(const double* h, double step, int rflags) {
    const double b1 = h[0], b2 = h[1], wd = h[3];
    const bool adamw = rflags & kAdamW, bc = rflags & kBiasCorrection;
    Ctx<T> c;
    c.inv_clip = T(1);
    c.beta1 = T(b1);
    c.beta3 = T((rflags & kGradAveraging) ? 1.0 - b1 : 1.0);
    c.beta2 = T(b2);
    c.one_minus_beta2 = T(1.0 - b2);
    c.bc1 = T(bc ? 1.0 - std::pow(b1, step) : 1.0);
    c.bc2 = T(bc ? 1.0 - std::pow(b2, step) : 1.0);
    c.eps = T(h[2]);
    c.l2 = adamw ? T(0) : T(wd);
    c.decoupled = adamw ? T(wd) : T(0);
    c.neg_ratio = T(0);
    return c;
  }

  // The global clip (apex: g / (G / max_grad_norm) when G > max_grad_norm), from global_in.
  template <class T>
  FO_HD static void set_clip(Ctx<T>& c, const double* h, const RedIn& r) {
    const double max_norm = h[4];
    if (r.global != nullptr && max_norm > 0.0) {
      const float gn = fo_sqrt(r.global[0]);  // fp32, as apex's norm
      c.inv_clip = gn > float(max_norm) ? T(1) / T(gn / float(max_norm)) : T(1);
    }
  }

  // New moments and the update direction (shared by both passes: the same bits).
  template <class T>
  FO_HD static T moments(T p, T g, const T* s, T& m, T& v, const Ctx<T>& c) {
    g = g * c.inv_clip;
    g = g + c.l2 * p;
    m = s[0] * c.beta1 + c.beta3 * g;
    v = s[1] * c.beta2 + c.one_minus_beta2 * g * g;
    const T denom = fo_sqrt(v / c.bc2) + c.eps;
    return (m / c.bc1) / denom + c.decoupled * p;  // + 0 * p is exact for finite p
  }
};

struct Lamb1 : LambCommon {
  static constexpr int kGlobalIn = 1;  // sum of squares of all (unscaled) grads
  static constexpr int kRedOut = 2;    // sum p^2, sum u^2
  static constexpr bool kWritesParam = false;  // core/traits.h: this pass stores neither p ...
  FO_HD static constexpr unsigned read_only_states(int) { return 3u; }  // ... nor m, v

  template <class T>
  FO_HD static Ctx<T> make(const double* h, double lr, double step, int rflags, const RedIn& r) {
    (void)lr;
    Ctx<T> c = base<T>(h, step, rflags);
    set_clip(c, h, r);
    return c;
  }

  template <int V, class T>
  FO_HD static void update(T& p, T g, T* s, const Ctx<T>& c, T* out) {
    T m, v;
    out[1] = moments(p, g, s, m, v, c);  // read-only pass: the engine stores neither p nor the states
    out[0] = p;
  }
};

struct Lamb2 : LambCommon {
  static constexpr int kGlobalIn = 1;  // the same global grad sum of squares as Lamb1
  static constexpr int kRedIn = 2;     // Lamb1's sums: ||p||^2, ||u||^2
  static constexpr bool kNoStepBump = true;

  template <class T>
  FO_HD static Ctx<T> make(const double* h, double lr, double step, int rflags, const RedIn& r) {
    Ctx<T> c = base<T>(h, step, rflags);
    set_clip(c, h, r);
    const double wd = h[3];
    double ratio = lr;
    if (r.tensor != nullptr && ((rflags & kNvLamb) || wd != 0.0)) {
      const float pn = fo_sqrt(r.tensor[0]), un = fo_sqrt(r.tensor[1]);
      if (pn != 0.0f && un != 0.0f) ratio = lr * double(pn / un);
    }
    c.neg_ratio = T(-ratio);
    return c;
  }

  template <int V, class T>
  FO_HD static void update(T& p, T g, T* s, const Ctx<T>& c) {
    T m, v;
    const T u = moments(p, g, s, m, v, c);
    s[0] = m;
    s[1] = v;
    p = p + c.neg_ratio * u;
  }
};

}  // namespace fusedopt::rules
