// Storage policies: how one element of a list is loaded into compute registers
// (T = float, or double for fp64 params on the CPU) and stored back.
//
// A rule never sees storage. The engines build one policy object per tensor and
// per list, call load(i) -> rule -> store(i, v). A policy that needs a whole block
// before it can store (8-bit block-wise states: absmax of the new values) uses
// kTile > 1: the engine then walks tiles of kTile elements aligned to the tensor
// start and calls end_tile(begin, len) after the stores of each tile.
#pragma once
#include "config.h"
#include "numeric.h"

namespace fusedopt {

// Raw pointers of one tensor's lists, as the engines receive them.
struct TensorPtrs {
  void* param;
  void* grad;
  void* state[kMaxStates];
  void* comp;  // Kahan compensation of a bf16 param, else null
  void* step;  // float32 (or float64) scalar step counter
  void* aux;   // float32 per-tensor scalar state of rules that have one (NAdam's mu_product), else null
  const float* red_in;  // reduced values of this tensor a rule reads (core/reduce.h), else null
  float* red_out;       // per-tensor sums a rule produces (core/reduce.h), else null
  float* absmax[kMaxStates];  // 8-bit states: per-block absmax of state k (core/q8.h), else null
  int64_t numel;
};

template <class T>
struct F32Store {
  static constexpr int kTile = 1;
  float* p;
  FO_HD T load(int64_t i) const { return T(p[i]); }
  FO_HD void store(int64_t i, T v) const { p[i] = float(v); }
};

template <class T>
struct F64Store {
  static constexpr int kTile = 1;
  double* p;
  FO_HD T load(int64_t i) const { return T(p[i]); }
  FO_HD void store(int64_t i, T v) const { p[i] = double(v); }
};

template <class T>
struct BF16Store {
  static constexpr int kTile = 1;
  uint16_t* p;
  FO_HD T load(int64_t i) const { return T(bf16_to_f32(p[i])); }
  FO_HD void store(int64_t i, T v) const { p[i] = f32_to_bf16_rne(float(v)); }
};

template <class T>
struct F16Store {
  static constexpr int kTile = 1;
  uint16_t* p;
  FO_HD T load(int64_t i) const { return T(f16_to_f32(p[i])); }
  FO_HD void store(int64_t i, T v) const { p[i] = f32_to_f16_rne(float(v)); }
};

// bf16 param written back with stochastic rounding; the random bits are a hash of
// (per-tensor seed, element index), so a step is reproducible.
template <class T>
struct BF16SRStore {
  static constexpr int kTile = 1;
  uint16_t* p;
  uint32_t seed;
  FO_HD T load(int64_t i) const { return T(bf16_to_f32(p[i])); }
  FO_HD void store(int64_t i, T v) const {
    p[i] = f32_to_bf16_sr(float(v), mix32(seed ^ uint32_t(i) * 0x9e3779b9u));
  }
};

// bf16 param plus a bf16 compensation state: the value is hi + lo, about 16
// mantissa bits, so small updates accumulate instead of vanishing.
template <class T>
struct BF16KahanStore {
  static constexpr int kTile = 1;
  uint16_t* p;
  uint16_t* c;
  FO_HD T load(int64_t i) const { return T(bf16_to_f32(p[i])) + T(bf16_to_f32(c[i])); }
  FO_HD void store(int64_t i, T v) const {
    float f = float(v);
    uint16_t hi = f32_to_bf16_rne(f);
    p[i] = hi;
    c[i] = f32_to_bf16_rne(f - bf16_to_f32(hi));
  }
};

// ---- how the engines pick policies ---------------------------------------------
// Param policy -> the grad's plain policy (grads have the param's dtype).
template <class P> struct GradOf;
template <class T> struct GradOf<F32Store<T>> { using type = F32Store<T>; };
template <class T> struct GradOf<F64Store<T>> { using type = F64Store<T>; };
template <class T> struct GradOf<BF16Store<T>> { using type = BF16Store<T>; };
template <class T> struct GradOf<F16Store<T>> { using type = F16Store<T>; };
template <class T> struct GradOf<BF16SRStore<T>> { using type = BF16Store<T>; };
template <class T> struct GradOf<BF16KahanStore<T>> { using type = BF16Store<T>; };

template <class P>
struct ParamMaker {
  FO_HD static P make(const TensorPtrs& t, uint32_t) { return P{static_cast<decltype(P::p)>(t.param)}; }
};
template <class T>
struct ParamMaker<BF16SRStore<T>> {
  FO_HD static BF16SRStore<T> make(const TensorPtrs& t, uint32_t seed) {
    return {static_cast<uint16_t*>(t.param), seed};
  }
};
template <class T>
struct ParamMaker<BF16KahanStore<T>> {
  FO_HD static BF16KahanStore<T> make(const TensorPtrs& t, uint32_t) {
    return {static_cast<uint16_t*>(t.param), static_cast<uint16_t*>(t.comp)};
  }
};

template <class S>
FO_HD S make_plain(void* ptr) {
  return S{static_cast<decltype(S::p)>(ptr)};
}

// Seed of the stochastic-rounding stream of one tensor at one step.
FO_HD uint32_t sr_seed(uint32_t tensor_index, double step) {
  return mix32(uint32_t(int64_t(step)) * 0x85ebca6bu ^ mix32(tensor_index + 0x632be5abu));
}

}  // namespace fusedopt
