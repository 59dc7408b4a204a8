// Iterate averaging (Granziol et al., Gadam / GadamX; docs/algorithms.md §18) as a per-element rule
// that reads no grad (core/traits.h). Called once after every inner optimizer step; the engine
// bumps the per-tensor counter `step` (float64) first. The iterate after inner step t is
// collected when t >= start_step and (t - start_step) % every == 0 (decided per tensor from the
// device counter, no host sync). The number of collected iterates n is a per-tensor float32
// scalar state (core/aux.h), advanced before make() on collecting steps only. With n the count
// including this iterate:
//   n == 1: avg = p                        (the first collection copies)
//   n >  1: avg = avg + (p - avg) / n      (three roundings, in this order: the arithmetic of
//                                           torch.optim.swa_utils.AveragedModel's default avg_fn,
//                                           which it uses on the CPU; on CUDA it uses a foreach
//                                           lerp with weight 1/n instead, equal up to rounding)
// Steps that do not collect touch no element (skip).
#pragma once
#include <cstdint>

#include "../numeric.h"
#include "../rule_facts.h"

namespace fusedopt::rules {

struct IterateAverage {
  static constexpr const char* kStates = "param_avg, @n_averaged=0";
  static constexpr HyperDecl kHyper[] = {{"start_step", 1.0}, {"every", 1.0}};
  static constexpr double kLr = 0.0;  // unused
  static constexpr int kNumVariants = 1;
  static constexpr bool kReadsGrad = false;
  static constexpr bool kWritesParam = false;
  static constexpr bool kHasAux = true;
  FO_HD static constexpr int num_states(int) { return 1; }

  FO_HD static bool collects(const double* h, double step) {
    const int64_t t = int64_t(step), start = int64_t(h[0]), every = int64_t(h[1]);
    return every > 0 && t >= start && (t - start) % every == 0;
  }

  FO_HD static float advance_aux(const double* h, double step, float n) {
    return collects(h, step) ? n + 1.0f : n;
  }

  template <class T>
  struct Ctx {
    T n;
    bool first, collect;
  };

  template <class T>
  FO_HD static Ctx<T> make(const double* h, double, double step, int, double n) {
    Ctx<T> c;
    c.collect = collects(h, step);
    c.first = n <= 1.0;
    c.n = T(n > 1.0 ? n : 1.0);
    return c;
  }

  template <class T>
  FO_HD static bool skip(const Ctx<T>& c) {
    return !c.collect;
  }

  template <int V, class T>
  FO_HD static void update(T& p, T, T* s, const Ctx<T>& c) {
    s[0] = self(c.first, p, s[0] + (p - s[0]) / c.n);
  }
};

}  // namespace fusedopt::rules
