// The one instantiation table of both engines: which (param storage, state storage, variant)
// combinations of a rule exist, and how a call's Launch{param_dt, param_mode, state_dt, flags}
// picks one at run time. torch-free; compiled by g++ (CPU engine) and nvcc (CUDA engine).
//
// An engine passes a Backend type:
//   template <class Rule, int V, class T, class PP, class SP> static void run(const Launch&, const char* what);
//   static constexpr bool kF64;                         float64 params (fp64 math, fp64 states) exist
//   [[noreturn]] static void fail(const char* what, const std::string& why);
// T is the math type (float; double for float64 params). SP is F32Store<T>, BF16Store<T> or
// Q8Store<T> (8-bit block-wise codes, core/q8.h).
//
// The table, pruned on purpose:
//   params  float32 | float16 | bfloat16 | bfloat16 + stochastic rounding | bfloat16 + Kahan | float64 (CPU)
//   states  float32 | bfloat16 | 8-bit (plain float32 / float16 / bfloat16 params, rules that read a grad,
//           variants that keep a state) ; float64 params keep float64 states
//   x every compile-time variant of the rule (Rule::kNumVariants).
#pragma once
#include <string>

#include "config.h"
#include "launch.h"
#include "q8.h"
#include "storage.h"
#include "traits.h"

namespace fusedopt {

// 8-bit states go with plain fp32 / fp16 / bf16 params only (the glue refuses the other modes).
template <class PP> inline constexpr bool kQ8Param = false;
template <> inline constexpr bool kQ8Param<F32Store<float>> = true;
template <> inline constexpr bool kQ8Param<F16Store<float>> = true;
template <> inline constexpr bool kQ8Param<BF16Store<float>> = true;

namespace table {

template <class B, class Rule, class T, class PP, class SP, int V = 0>
void run_variant(const Launch& L, int v, const char* what) {
  if constexpr (V < Rule::kNumVariants) {
    if constexpr (SP::kTile == 1 || Rule::num_states(V) > 0) {  // a stateless variant has nothing to keep in 8 bits
      if (v == V) return B::template run<Rule, V, T, PP, SP>(L, what);
    }
    return run_variant<B, Rule, T, PP, SP, V + 1>(L, v, what);
  } else {
    B::fail(what, "no kernel for variant " + std::to_string(v) + " with these states (the rule has " +
                      std::to_string(Rule::kNumVariants) + " variants)");
  }
}

template <class B, class Rule, class T, class PP>
void run_state(const Launch& L, int v, const char* what) {
  if constexpr (sizeof(T) == 8) {
    return run_variant<B, Rule, T, PP, F64Store<T>>(L, v, what);  // fp64 params keep fp64 states
  } else {
    if (L.state_dt == Dt::U8) {
      if constexpr (kQ8Param<PP> && reads_grad<Rule>()) {
        return run_variant<B, Rule, T, PP, Q8Store<T>>(L, v, what);
      } else {
        B::fail(what, "8-bit states need plain float32 / float16 / bfloat16 params and a rule that reads a grad");
      }
    }
    if (L.state_dt == Dt::BF16) return run_variant<B, Rule, T, PP, BF16Store<T>>(L, v, what);
    return run_variant<B, Rule, T, PP, F32Store<T>>(L, v, what);
  }
}

}  // namespace table

template <class B, class Rule>
void dispatch_rule(const Launch& L, const char* what) {
  const int v = variant_of(L.flags);
  switch (L.param_dt) {
    case Dt::F32: return table::run_state<B, Rule, float, F32Store<float>>(L, v, what);
    case Dt::F16: return table::run_state<B, Rule, float, F16Store<float>>(L, v, what);
    case Dt::BF16:
      if (L.param_mode == ParamMode::StochRound) return table::run_state<B, Rule, float, BF16SRStore<float>>(L, v, what);
      if (L.param_mode == ParamMode::Kahan) return table::run_state<B, Rule, float, BF16KahanStore<float>>(L, v, what);
      return table::run_state<B, Rule, float, BF16Store<float>>(L, v, what);
    case Dt::F64:
      if constexpr (B::kF64) {
        return table::run_state<B, Rule, double, F64Store<double>>(L, v, what);
      } else {
        B::fail(what, "float64 params are supported on the CPU only");
      }
    default: B::fail(what, "unsupported param dtype");
  }
}

}  // namespace fusedopt
