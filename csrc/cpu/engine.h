// The CPU multi-tensor engine. Included by kernels_<isa>.cpp inside an ISA-specific
// namespace (FO_ISA) under `#pragma GCC target(...)`; torch-free.
//
// One step of one op call:
//   1. bump every tensor's step counter, build the rule's per-tensor scalars (host, once);
//   2. cut all tensors into work items of at most kChunk elements;
//   3. one OpenMP parallel region over the items of all tensors (static schedule:
//      each thread streams a contiguous run of the flat element space);
//   4. per item a `#pragma omp simd` loop: load through the storage policies,
//      rule.update in registers, store through the policies.
// Rules reading reduced values (core/reduce.h: kGlobalIn / kRedIn) get them in make(); a rule
// producing per-tensor sums of squares (kRedOut) runs the item in tiles of kOutTile elements: the
// element loop writes the rule's outputs to a tile buffer, a second loop adds their squares into
// kLanes fp64 lanes (lane = position in the item mod kLanes); items' partials are folded per tensor
// in order after the parallel region, so the sums do not depend on the thread count.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <new>

#include "../core/aux.h"
#include "../core/config.h"
#include "../core/launch.h"
#include "../core/reduce.h"
#include "../core/storage.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace fusedopt::cpu::FO_ISA {

// A run of elements [begin, end) of tensor `t`.
struct Item {
  int64_t t, begin, end;
};

template <class Rule, int V, class T, class PP, class SP>
struct Engine {
  static constexpr int K = Rule::num_states(V);
  static constexpr int KO = red_out_count<Rule>();
  static constexpr int kOutTile = 512;  // a multiple of kLanes
  static_assert(PP::kTile == 1 && SP::kTile == 1, "tiled (block-wise) storage needs the tile walk of the 8-bit issue");
  using GP = typename GradOf<PP>::type;
  using Ctx = typename Rule::template Ctx<T>;

  template <bool kScaled>
  static void run_item(const Launch& L, const Item& it, const Ctx c, float scale, T gsign, double* part) {
    // c by value: a local copy cannot alias the stores, so its fields stay in registers
    const TensorPtrs& tp = L.tensors[it.t];
    const uint32_t seed = sr_seed(uint32_t(it.t), step_value(L, tp));
    PP pp = ParamMaker<PP>::make(tp, seed);
    GP gp = make_plain<GP>(tp.grad);
    // Four named policy objects rather than an array: GCC 12 does not vectorise the loop
    // when the state pointers are re-read from a local array (checked with -fopt-info-vec).
    const SP sp0 = make_plain<SP>(tp.state[0]);
    const SP sp1 = make_plain<SP>(K > 1 ? tp.state[1] : tp.state[0]);
    const SP sp2 = make_plain<SP>(K > 2 ? tp.state[2] : tp.state[0]);
    const SP sp3 = make_plain<SP>(K > 3 ? tp.state[3] : tp.state[0]);
    const int64_t b = it.begin, e = it.end;
    if constexpr (KO > 0) {
      run_item_out<kScaled>(pp, gp, sp0, sp1, sp2, sp3, b, e, c, scale, gsign, part);
      return;
    } else {
      (void)part;
    }
    // No `omp simd`: it turns the per-element state array below into a per-lane array that
    // GCC 12 cannot vectorise. ivdep says the lists do not overlap (the glue checks dtypes;
    // params, grads and states are distinct tensors).
#pragma GCC ivdep
    for (int64_t i = b; i < e; ++i) {
      T g = gp.load(i);
      if constexpr (kScaled) {
        g = g / T(scale);
        gp.store(i, g);  // unscaled grads are written back, as torch's fused kernels do
      }
      g = g * gsign;
      T p = pp.load(i);
      T s[kMaxStates];
      if constexpr (K > 0) s[0] = sp0.load(i);  // a rule variant may keep no state (plain SGD)
      if constexpr (K > 1) s[1] = sp1.load(i);
      if constexpr (K > 2) s[2] = sp2.load(i);
      if constexpr (K > 3) s[3] = sp3.load(i);
      if constexpr (KO == 0) Rule::template update<V>(p, g, s, c);  // (KO > 0 returned above)
      pp.store(i, p);
      if constexpr (K > 0) sp0.store(i, s[0]);
      if constexpr (K > 1) sp1.store(i, s[1]);
      if constexpr (K > 2) sp2.store(i, s[2]);
      if constexpr (K > 3) sp3.store(i, s[3]);
    }
  }

  // The item in tiles, for rules with per-tensor outputs (KO > 0): part[k] = sum of out[k]^2.
  template <bool kScaled>
  static void run_item_out(const PP& pp, const GP& gp, const SP& sp0, const SP& sp1, const SP& sp2, const SP& sp3,
                           int64_t b, int64_t e, const Ctx c, float scale, T gsign, double* part) {
    constexpr int KOS = KO > 0 ? KO : 1;
    double acc[KOS][kLanes];
    for (int k = 0; k < KO; ++k)
      for (int j = 0; j < kLanes; ++j) acc[k][j] = 0.0;
    T buf[KOS][kOutTile];
    for (int64_t t0 = b; t0 < e; t0 += kOutTile) {
      const int n = int(e - t0 < kOutTile ? e - t0 : kOutTile);
#pragma GCC ivdep
      for (int j = 0; j < n; ++j) {
        const int64_t i = t0 + j;
        T g = gp.load(i);
        if constexpr (kScaled) {
          g = g / T(scale);
          gp.store(i, g);
        }
        g = g * gsign;
        T p = pp.load(i);
        T s[kMaxStates];
        if constexpr (K > 0) s[0] = sp0.load(i);
        if constexpr (K > 1) s[1] = sp1.load(i);
        if constexpr (K > 2) s[2] = sp2.load(i);
        if constexpr (K > 3) s[3] = sp3.load(i);
        T out[KOS];
        Rule::template update<V>(p, g, s, c, out);
        if constexpr (!ReadOnlyPass<Rule>) {
          pp.store(i, p);
          if constexpr (K > 0) sp0.store(i, s[0]);
          if constexpr (K > 1) sp1.store(i, s[1]);
          if constexpr (K > 2) sp2.store(i, s[2]);
          if constexpr (K > 3) sp3.store(i, s[3]);
        }
        for (int k = 0; k < KO; ++k) buf[k][j] = out[k];
      }
      for (int k = 0; k < KO; ++k) {
        int j = 0;
        for (; j + kLanes <= n; j += kLanes)
          for (int l = 0; l < kLanes; ++l) acc[k][l] += double(buf[k][j + l]) * double(buf[k][j + l]);
        for (int l = 0; j < n; ++j, ++l) acc[k][l] += double(buf[k][j]) * double(buf[k][j]);
      }
    }
    for (int k = 0; k < KO; ++k) {
      for (int w = kLanes / 2; w > 0; w /= 2)
        for (int j = 0; j < w; ++j) acc[k][j] += acc[k][j + w];
      part[k] = acc[k][0];
    }
  }

  static double step_value(const Launch& L, const TensorPtrs& tp) {
    return L.step_f64 ? *static_cast<double*>(tp.step) : double(*static_cast<float*>(tp.step));
  }

  static void run(const Launch& L) {
    const int64_t n = L.ntensors;
    if (n == 0) return;
    if (L.found_inf && *L.found_inf != 0.0f) return;  // skip params, states and steps alike

    // per-tensor scalars, and the work items
    Ctx* ctx = static_cast<Ctx*>(std::malloc(sizeof(Ctx) * size_t(n)));
    int64_t nitems = 0;
    int64_t total = 0;
    for (int64_t t = 0; t < n; ++t) {
      const TensorPtrs& tp = L.tensors[t];
      double step;
      if constexpr (NoStepBump<Rule>) {
        step = step_value(L, tp);  // a later pass of a multi-pass rule: the first pass bumped it
      } else if (L.step_f64) {
        step = (*static_cast<double*>(tp.step) += 1.0);
      } else {
        step = double(*static_cast<float*>(tp.step) += 1.0f);
      }
      double aux = 0.0;
      if constexpr (HasAux<Rule>) {
        float* a = static_cast<float*>(tp.aux);
        *a = Rule::advance_aux(L.hyper, step, *a);
        aux = double(*a);
      }
      ctx[t] = make_ctx<Rule, T>(L.hyper, L.lr, step, rule_flags(L.flags), aux, RedIn{L.global_in, tp.red_in});
      nitems += (tp.numel + kChunk - 1) / kChunk;
      total += tp.numel;
    }
    Item* items = static_cast<Item*>(std::malloc(sizeof(Item) * size_t(nitems > 0 ? nitems : 1)));
    int64_t w = 0;
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t b = 0; b < L.tensors[t].numel; b += kChunk) {
        int64_t e = b + kChunk < L.tensors[t].numel ? b + kChunk : L.tensors[t].numel;
        items[w++] = Item{t, b, e};
      }
    }
    // maximize's sign times the rule's global grad factor (core/reduce.h; 1 for most rules)
    const T gsign = ((L.flags & kFlagMaximize) ? T(-1) : T(1)) *
                    T(grad_factor_of<Rule>(L.hyper, rule_flags(L.flags), RedIn{L.global_in, nullptr}));
    const bool scaled = L.grad_scale != nullptr;
    const float scale = scaled ? *L.grad_scale : 1.0f;
    // below ~32K elements a parallel region costs more than it saves
    const int nthreads = total < 32768 ? 1 : (L.nthreads > 0 ? L.nthreads : 1);
    double* part = KO > 0 ? static_cast<double*>(std::malloc(sizeof(double) * size_t(KO * (nitems > 0 ? nitems : 1))))
                          : nullptr;
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1)
    for (int64_t i = 0; i < nitems; ++i) {
      double* pi = KO > 0 ? part + KO * i : nullptr;
      if (scaled)
        run_item<true>(L, items[i], ctx[items[i].t], scale, gsign, pi);
      else
        run_item<false>(L, items[i], ctx[items[i].t], scale, gsign, pi);
    }
    if constexpr (KO > 0) {  // fold the items' partials of each tensor in order
      int64_t k = 0;
      for (int64_t t = 0; t < n; ++t) {
        double sum[KO];
        for (int j = 0; j < KO; ++j) sum[j] = 0.0;
        for (int64_t c = num_chunks(L.tensors[t].numel); c > 0; --c, ++k)
          for (int j = 0; j < KO; ++j) sum[j] += part[KO * k + j];
        for (int j = 0; j < KO; ++j) L.tensors[t].red_out[j] = float(sum[j]);
      }
      std::free(part);
    }
    std::free(items);
    std::free(ctx);
  }
};

// Expand a runtime variant index into the rule's compile-time variants.
template <class Rule, class T, class PP, class SP, int V = 0>
void run_variant(const Launch& L, int v) {
  if constexpr (V < Rule::kNumVariants) {
    if (v == V) return Engine<Rule, V, T, PP, SP>::run(L);
    return run_variant<Rule, T, PP, SP, V + 1>(L, v);
  }
}

template <class Rule, class T, class PP>
void run_state(const Launch& L, int v) {
  if constexpr (sizeof(T) == 8) {
    run_variant<Rule, T, PP, F64Store<T>>(L, v);  // fp64 params keep fp64 states
  } else {
    if (L.state_dt == Dt::BF16)
      run_variant<Rule, T, PP, BF16Store<T>>(L, v);
    else
      run_variant<Rule, T, PP, F32Store<T>>(L, v);
  }
}

// The instantiation table: param storage x state storage x variant, pruned on purpose.
template <class Rule>
void dispatch(const Launch& L) {
  const int v = variant_of(L.flags);
  switch (L.param_dt) {
    case Dt::F32: return run_state<Rule, float, F32Store<float>>(L, v);
    case Dt::F64: return run_state<Rule, double, F64Store<double>>(L, v);
    case Dt::F16: return run_state<Rule, float, F16Store<float>>(L, v);
    case Dt::BF16:
      if (L.param_mode == ParamMode::StochRound) return run_state<Rule, float, BF16SRStore<float>>(L, v);
      if (L.param_mode == ParamMode::Kahan) return run_state<Rule, float, BF16KahanStore<float>>(L, v);
      return run_state<Rule, float, BF16Store<float>>(L, v);
    default: return;
  }
}

}  // namespace fusedopt::cpu::FO_ISA
