// Lookahead's slow-weight sync (Zhang et al. 2019; docs/algorithms.md §17) as a per-element rule that
// reads no grad (core/traits.h). Called once after every inner optimizer step; the engine bumps
// the per-tensor counter `step` (float64, on the param's device) first, and the sync happens on
// the steps where step % k == 0, decided per tensor from the counter in make(): on the device,
// with no host sync, so the step stays CUDA-graph capturable. Other steps touch no element (skip).
//
// On a sync, with a = alpha (the weight of the fast weights):
//   p    = lerp(p, slow, 1 - a)      (= slow + a (p - slow), as kozistr/pytorch_optimizer's
//   slow = p                          p.lerp_(slow, 1-a): torch.lerp's two-sided formula, one fma)
// pullback_momentum (the inner optimizer's momentum buffer `buf`, its cache `slow_buf`):
//   variant 1 "pullback": buf = lerp(buf, slow_buf, 1 - a); slow_buf = buf
//   variant 2 "reset":    buf = 0
//   variant 0 "none":     inner states untouched
// The states: slow_param; momentum_buffer (variants 1, 2); slow_momentum (variant 1).
#pragma once
#include <cstdint>

#include "../numeric.h"
#include "../rule_facts.h"

namespace fusedopt::rules {

struct LookaheadSync {
  static constexpr const char* kStates = "slow_param, momentum_buffer, slow_momentum";
  static constexpr HyperDecl kHyper[] = {{"alpha", 0.5}, {"k", 5.0}};
  static constexpr double kLr = 0.0;  // unused
  static constexpr FieldDecl kVariant[] = {{"pullback_momentum", 2, "none|pullback|reset"}};
  static constexpr int kNumVariants = 3;
  static constexpr bool kReadsGrad = false;
  FO_HD static constexpr int num_states(int variant) { return variant == 1 ? 3 : variant == 2 ? 2 : 1; }

  template <class T>
  struct Ctx {
    T w, one_minus_w;  // lerp weight toward the slow weights: 1 - alpha
    bool w_small, sync;
  };

  template <class T>
  FO_HD static Ctx<T> make(const double* h, double, double step, int) {
    Ctx<T> c;
    c.w = T(1.0 - h[0]);
    c.one_minus_w = T(1) - c.w;  // exact for w in [0.5, 1], the only branch that uses it
    c.w_small = double(c.w) < 0.5;
    const int64_t k = int64_t(h[1]);
    c.sync = k > 0 && int64_t(step) % k == 0;
    return c;
  }

  template <class T>
  FO_HD static bool skip(const Ctx<T>& c) {
    return !c.sync;
  }

  template <int V, class T>
  FO_HD static void update(T& p, T, T* s, const Ctx<T>& c) {
    // only reached when c.sync (skip() keeps the engines away otherwise)
    p = lerp_torch_fma(p, s[0], c.w, c.one_minus_w, c.w_small);
    s[0] = p;
    if constexpr (V == 1) {
      const T buf = lerp_torch_fma(s[1], s[2], c.w, c.one_minus_w, c.w_small);
      s[1] = buf;
      s[2] = buf;
    }
    if constexpr (V == 2) s[1] = T(0);
  }
};

}  // namespace fusedopt::rules
