// RMSprop (Hinton's lecture 6e; Graves 2013 for the centered form), torch.optim.RMSprop
// semantics (docs/algorithms.md §2), operation order as torch's for-loop:
//   g += wd p (L2);  v = alpha v + (1-alpha) g^2;
//   centered: ga = lerp(ga, g, 1-alpha); avg = sqrt(v - ga^2) + eps;  else avg = sqrt(v) + eps;
//   momentum > 0: buf = mom buf + g/avg; p -= lr buf;  else p -= lr g/avg.
// Each op rounds as torch's CPU kernel (add(alpha=) / addcmul / lerp: one fused multiply-add,
// fo_fma; addcdiv: p + (value*a)/b), so fp32 results equal torch's bit for bit on the CPU.
// No bias correction; the step counter is kept (torch keeps it) but unused by the update.
//
// Named state lists: square_avg, momentum_buffer, grad_avg. Variants use the subsets
// (slot_mask, packed by the glue into the engine's slots in this order):
//   0: square_avg                        -> s0 = square_avg
//   1: + momentum_buffer                 -> s1 = momentum_buffer
//   2: + grad_avg (centered)             -> s1 = grad_avg
//   3: + momentum_buffer + grad_avg      -> s1 = momentum_buffer, s2 = grad_avg
#pragma once
#include <cmath>

#include "../numeric.h"
#include "../rule_facts.h"

namespace fusedopt::rules {

struct RMSprop {
  static constexpr const char* kStates = "+square_avg, momentum_buffer, grad_avg";
  static constexpr HyperDecl kHyper[] = {{"alpha", 0.99}, {"eps", 1e-8}, {"weight_decay", 0.0}, {"momentum", 0.0}};
  static constexpr double kLr = 1e-2;
  static constexpr FieldDecl kVariant[] = {{"momentum", 1}, {"centered", 1}};  // momentum: set when momentum != 0
  static constexpr int kNumVariants = 4;  // bit 0: momentum buffer, bit 1: centered
  FO_HD static constexpr int num_states(int variant) { return 1 + (variant & 1) + ((variant >> 1) & 1); }
  static constexpr unsigned slot_mask(int variant) {
    return 1u | ((variant & 1) ? 2u : 0u) | ((variant & 2) ? 4u : 0u);
  }

  template <class T>
  struct Ctx {
    T alpha, one_minus_alpha, w, one_minus_w, eps, l2, mom, neg_lr;
    bool w_small;
  };

  template <class T>
  FO_HD static Ctx<T> make(const double* h, double lr, double, int) {
    const double alpha = h[0];
    Ctx<T> c;
    c.alpha = T(alpha);
    c.one_minus_alpha = T(1.0 - alpha);
    c.w = T(1.0 - alpha);  // lerp weight of grad_avg
    c.one_minus_w = T(1.0 - double(c.w));
    c.w_small = (1.0 - alpha) < 0.5;
    c.eps = T(h[1]);
    c.l2 = T(h[2]);
    c.mom = T(h[3]);
    c.neg_lr = T(-lr);
    return c;
  }

  template <int V, class T>
  FO_HD static void update(T& p, T g, T* s, const Ctx<T>& c) {
    constexpr bool kMom = V & 1, kCentered = V & 2;
    g = fo_fma(p, c.l2, g);  // grad.add(param, alpha=wd); exact when l2 == 0 and p is finite
    T v = fo_fma(c.one_minus_alpha * g, g, s[0] * c.alpha);  // v.mul_(a).addcmul_(g, g, value=1-a)
    s[0] = v;
    T avg;
    if constexpr (kCentered) {
      constexpr int kGa = kMom ? 2 : 1;
      T ga = lerp_torch_fma(s[kGa], g, c.w, c.one_minus_w, c.w_small);  // ga.lerp_(g, 1-a)
      s[kGa] = ga;
      avg = fo_sqrt(fo_fma(-ga, ga, v)) + c.eps;  // v.addcmul(ga, ga, value=-1).sqrt_().add_(eps)
    } else {
      avg = fo_sqrt(v) + c.eps;
    }
    if constexpr (kMom) {
      T buf = s[1] * c.mom + g / avg;  // buf.mul_(m).addcdiv_(g, avg)
      s[1] = buf;
      p = fo_fma(buf, c.neg_lr, p);  // param.add_(buf, alpha=-lr)
    } else {
      p = p + (c.neg_lr * g) / avg;  // param.addcdiv_(g, avg, value=-lr)
    }
  }
};

}  // namespace fusedopt::rules
