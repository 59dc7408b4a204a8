// KOALA (Davtyan et al. 2022, Kalman optimization with loss adaptivity; docs/algorithms.md §16), the
// authors' VanillaKOALA (KOALA-V) and MomentumKOALA (KOALA-M) of Araachie/koala : koala.py.
// The covariance P (a scalar for V, one 2x2 matrix for M, shared by every param), the measurement
// noise R and M's process noise qw are a handful of float64 scalars on the params' device, updated by
// torch ops in python/fusedopt/optim/koala.py (no host sync). The element-wise work is three passes:
//
//   KoalaPredict (M only, called by predict() before the forward; reads no grad; kRedOut = 1):
//       out = pbar - p  (p before the move: the authors take delta_l = ||pbar_l - p_l|| first)
//       p = p + v;  v = a * v            (F = [[1, 1], [0, a]] applied to (p, v))
//   KoalaNorms (pass 1 of step(); reads only: kWritesParam = false; kRedOut = 3; bumps the step):
//       out = (g, g + wd * p, p)   -> per tensor ||g||^2, ||g~||^2, ||p||^2 (fp64 sums, fp32 out)
//   Koala (pass 2; kRedIn = 3: the per-tensor gains K1, K2 and active = ||g|| >= 1e-9; kNoStepBump):
//       variant 0 (V):  p = p - K1 * g            (the raw grad: KOALA-V's code quirk)
//       variant 1 (M):  g~ = g + wd * p;  p = p - K1 * g~;  v = v - K2 * g~;  pbar = 0.9 pbar + 0.1 p
//   A tensor that is not active (||g|| < 1e-9) is skipped whole (core/traits.h: skip): p, v and pbar
//   keep their values, as the authors' `continue`.
// K1 = lr * L_l * P00 / s, K2 = lr * L_l * P10 / s with s = ||g~||^2 P00 + R, L_l = L + wd/2 ||p||^2
// (V: P00 = P) are computed between the passes from KoalaNorms' sums; the kernels see them in fp32.
// States velocity, param_ema: KOALA-M's; KOALA-V keeps none.
#pragma once

#include "../numeric.h"
#include "../rule_facts.h"
#include "../reduce.h"

namespace fusedopt::rules {

struct KoalaPredict {
  static constexpr const char* kStates = "velocity, param_ema";
  static constexpr HyperDecl kHyper[] = {{"a", 0.9}};
  static constexpr double kLr = 0.0;  // unused
  static constexpr int kNumVariants = 1;
  static constexpr bool kReadsGrad = false;   // core/traits.h
  static constexpr int kRedOut = 1;           // sum (pbar - p)^2, p before the move
  static constexpr bool kNoStepBump = true;   // the step counts update steps (KoalaNorms bumps it)
  FO_HD static constexpr int num_states(int) { return 2; }
  FO_HD static constexpr unsigned read_only_states(int) { return 2u; }  // pbar is only read

  template <class T>
  struct Ctx {
    T a;
  };

  template <class T>
  FO_HD static Ctx<T> make(const double* h, double, double, int) {
    return Ctx<T>{T(h[0])};
  }

  template <int V, class T>
  FO_HD static void update(T& p, T, T* s, const Ctx<T>& c, T* out) {
    out[0] = s[1] - p;
    p = p + s[0];
    s[0] = c.a * s[0];
  }
};

struct KoalaNorms {
  static constexpr const char* kStates = "";
  static constexpr HyperDecl kHyper[] = {{"weight_decay", 0.0}};
  static constexpr double kLr = 0.0;  // unused
  static constexpr int kNumVariants = 1;
  static constexpr int kRedOut = 3;             // ||g||^2, ||g + wd p||^2, ||p||^2
  static constexpr bool kWritesParam = false;   // core/traits.h: a read-only pass
  FO_HD static constexpr int num_states(int) { return 0; }

  template <class T>
  struct Ctx {
    T wd;
  };

  template <class T>
  FO_HD static Ctx<T> make(const double* h, double, double, int) {
    return Ctx<T>{T(h[0])};
  }

  template <int V, class T>
  FO_HD static void update(T& p, T g, T*, const Ctx<T>& c, T* out) {
    out[0] = g;
    out[1] = g + c.wd * p;
    out[2] = p;
  }
};

struct Koala {
  static constexpr const char* kStates = "velocity, param_ema";
  static constexpr HyperDecl kHyper[] = {{"weight_decay", 0.0}};
  static constexpr double kLr = 0.0;  // unused: the gains carry it
  static constexpr FieldDecl kVariant[] = {{"momentum", 1}};  // KOALA-M
  static constexpr int kNumVariants = 2;  // 0: KOALA-V, 1: KOALA-M
  static constexpr int kRedIn = 3;        // K1, K2, active
  static constexpr bool kNoStepBump = true;
  FO_HD static constexpr int num_states(int variant) { return variant == 1 ? 2 : 0; }

  template <class T>
  struct Ctx {
    T wd, k1, k2, keep, mix;  // keep, mix: the EMA weights of pbar (0.9, 0.1 in the authors' code)
    bool active;
  };

  template <class T>
  FO_HD static Ctx<T> make(const double* h, double, double, int, const RedIn& r) {
    Ctx<T> c;
    c.wd = T(h[0]);
    c.keep = T(0.9);
    c.mix = T(0.1);
    c.active = r.tensor != nullptr && r.tensor[2] != 0.0f;
    c.k1 = c.active ? T(r.tensor[0]) : T(0);
    c.k2 = c.active ? T(r.tensor[1]) : T(0);
    return c;
  }

  template <class T>
  FO_HD static bool skip(const Ctx<T>& c) {
    return !c.active;
  }

  template <int V, class T>
  FO_HD static void update(T& p, T g, T* s, const Ctx<T>& c) {
    if constexpr (V == 1) {
      const T d = g + c.wd * p;
      p = p - c.k1 * d;
      s[0] = s[0] - c.k2 * d;
      s[1] = c.keep * s[1] + c.mix * p;
    } else {
      p = p - c.k1 * g;
    }
  }
};

}  // namespace fusedopt::rules
