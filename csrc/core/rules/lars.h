// LARS (You, Gitman, Ginsburg 2017), the paper's form (docs/algorithms.md §14) with the options everyone
// adds. Per tensor, from its norms (reduction engine: red_in = [||w||^2, ||g||^2, adapt]):
//   adapt (a tensor not excluded, e.g. not 1-D / not matched by exclude_fn):
//     trust = eta * ||w|| / (||g|| + wd * ||w|| + eps)   if ||w|| > 0 and ||g|| > 0, else 1
//     trust_clip: trust = min(trust / lr, 1)  (LARC's clip: the local lr never exceeds the global lr)
//   excluded: trust = 1 and no weight decay.
//   d = g + wd * w;  v = momentum * v + lr * trust * d  (lr inside the momentum, as the paper);
//   w -= v, or with nesterov  w -= momentum * v + lr * trust * d.
// With a constant lr this equals the torch-SGD form buf = momentum * buf + trust * d, w -= lr * buf
// (pytorch_optimizer.LARS with dampening 0 and eps 0); under an lr schedule the paper's form keeps
// the old steps' lr in v. ||g|| is the norm of the unscaled grad (the reduction takes grad_scale).
// Variant 0 (momentum == 0) keeps no state: w -= lr*trust*d.
#pragma once
#include <cmath>

#include "../numeric.h"
#include "../rule_facts.h"
#include "../reduce.h"

namespace fusedopt::rules {

struct Lars {
  static constexpr const char* kStates = "momentum_buffer";
  static constexpr HyperDecl kHyper[] = {
      {"momentum", 0.9}, {"weight_decay", 0.0}, {"trust_coefficient", 1e-3}, {"eps", 1e-8}};
  static constexpr FlagDecl kFlags[] = {{"nesterov", false}, {"trust_clip", false}};
  static constexpr FieldDecl kVariant[] = {{"momentum", 1}};  // set when momentum != 0
  static constexpr int kNumVariants = 2;
  static constexpr int kRedIn = 3;  // ||w||^2, ||g||^2, adapt (1) or excluded (0)
  enum : int { kNesterov = 1, kTrustClip = 2 };
  FO_HD static constexpr int num_states(int variant) { return variant == 1 ? 1 : 0; }

  template <class T>
  struct Ctx {
    T mom, wd, step;  // step = lr * trust
    bool nesterov;
  };

  template <class T>
  FO_HD static Ctx<T> make(const double* h, double lr, double, int rflags, const RedIn& r) {
    const bool adapt = r.tensor != nullptr && r.tensor[2] != 0.0f;
    const double wd = adapt ? h[1] : 0.0;
    double trust = 1.0;
    if (adapt) {
      const double wn = std::sqrt(double(r.tensor[0])), gn = std::sqrt(double(r.tensor[1]));
      if (wn > 0.0 && gn > 0.0) trust = h[2] * wn / (gn + wd * wn + h[3]);
      if ((rflags & kTrustClip) && lr > 0.0) trust = trust / lr < 1.0 ? trust / lr : 1.0;
    }
    Ctx<T> c;
    c.mom = T(h[0]);
    c.wd = T(wd);
    c.step = T(lr * trust);
    c.nesterov = (rflags & kNesterov) != 0;
    return c;
  }

  template <int V, class T>
  FO_HD static void update(T& p, T g, T* s, const Ctx<T>& c) {
    const T d = g + c.wd * p;
    const T inc = c.step * d;
    if constexpr (V == 1) {
      const T v = c.mom * s[0] + inc;
      s[0] = v;
      p = p - self(c.nesterov, c.mom * v + inc, v);
    } else {
      p = p - inc;
    }
  }
};

}  // namespace fusedopt::rules
