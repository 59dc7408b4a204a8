// SGD with momentum / dampening / Nesterov, torch.optim.SGD semantics (docs/algorithms.md §2):
//   g += wd p (L2);  momentum: buf = g at the buffer's first step, else buf = mom buf + (1-damp) g;
//   d = nesterov ? g + mom buf : buf  (no momentum: d = g);  p -= lr d.
// Every `x + alpha*y` of torch's for-loop is one fused multiply-add (fo_fma, as torch's CPU/CUDA
// kernels round it), so fp32 results equal torch's bit for bit on the CPU.
//
// torch keeps only `momentum_buffer` (no step) and tests "buffer is None" for the first step.
// Our engine always has a per-tensor step counter: the first step of the buffer is step == 1,
// decided once per tensor in make() (a ctx bool, a select in update: no branch per element).
// The Python class keeps `step` as an extra state key, resets it when it creates a momentum
// buffer for a param that already has steps (momentum switched on later), and treats a torch
// state_dict's momentum_buffer without a step as step >= 1.
//
// Variant 0 (momentum == 0) keeps no state; variant 1 keeps momentum_buffer.
#pragma once
#include <cmath>

#include "../numeric.h"
#include "../rule_facts.h"

namespace fusedopt::rules {

struct SGD {
  static constexpr const char* kStates = "momentum_buffer";
  static constexpr HyperDecl kHyper[] = {{"momentum", 0.0}, {"dampening", 0.0}, {"weight_decay", 0.0}};
  static constexpr FlagDecl kFlags[] = {{"nesterov", false}};
  static constexpr FieldDecl kVariant[] = {{"momentum", 1}};  // set when the momentum hyperparameter != 0
  static constexpr int kNumVariants = 2;  // 0: no momentum (no state), 1: momentum buffer
  enum : int { kNesterov = 1 };  // rule runtime flag
  FO_HD static constexpr int num_states(int variant) { return variant == 1 ? 1 : 0; }

  template <class T>
  struct Ctx {
    T neg_lr, l2, mom, one_minus_damp;
    bool first, nesterov;
  };

  template <class T>
  FO_HD static Ctx<T> make(const double* h, double lr, double step, int rflags) {
    Ctx<T> c;
    c.mom = T(h[0]);
    c.one_minus_damp = T(1.0 - h[1]);
    c.l2 = T(h[2]);
    c.neg_lr = T(-lr);
    c.first = step == 1.0;
    c.nesterov = (rflags & kNesterov) != 0;
    return c;
  }

  template <int V, class T>
  FO_HD static void update(T& p, T g, T* s, const Ctx<T>& c) {
    g = fo_fma(p, c.l2, g);  // grad.add(param, alpha=wd); exact when l2 == 0 and p is finite
    if constexpr (V == 1) {
      T buf = self(c.first, g, fo_fma(g, c.one_minus_damp, s[0] * c.mom));  // buf.mul_(m).add_(g, alpha=1-d)
      s[0] = buf;
      g = self(c.nesterov, fo_fma(buf, c.mom, g), buf);  // grad.add(buf, alpha=m)
    }
    p = fo_fma(g, c.neg_lr, p);  // param.add_(d, alpha=-lr)
  }
};

}  // namespace fusedopt::rules
