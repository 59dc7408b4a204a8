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
//
//   With a tiled state policy (SP::kTile > 1: 8-bit block-wise states, core/q8.h) step 4 walks the
//   item block by block instead (run_item_tiled): one vectorised loop runs the rule over the block,
//   keeping the new state values in a small local buffer, then per state one loop takes the
//   block's absmax and one requantizes and stores the codes. Items are whole blocks (kChunk is a
//   multiple of every block size), so blocks never straddle threads. A rule with per-tensor outputs
//   (LAMB's first pass) keeps its outputs of the block in a second local buffer and adds their
//   squares into the same kLanes fp64 lanes as above (add_squares: a block starts at a multiple of
//   kLanes in its item), so the sums are bitwise those of the 32-bit walk over the decoded states.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <stdexcept>
#include <string>

#include "../core/aux.h"
#include "../core/config.h"
#include "../core/dispatch.h"
#include "../core/launch.h"
#include "../core/reduce.h"
#include "../core/storage.h"
#include "../core/traits.h"
#include "q8_block.h"

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
  static constexpr unsigned kReadOnly = read_only_states<Rule>(V);  // core/traits.h: loaded, not stored
  static constexpr int KO = red_out_count<Rule>();
  static constexpr int kOutTile = 512;  // a multiple of kLanes
  static constexpr bool kTiled = SP::kTile > 1;
  static_assert(PP::kTile == 1, "params are never stored block-wise");
  using GP = typename GradOf<PP>::type;
  using Ctx = typename Rule::template Ctx<T>;
  static constexpr bool kGrad = reads_grad<Rule>();      // core/traits.h
  static constexpr bool kStoreP = writes_param<Rule>();

  // The grad of element i as the rule sees it: unscaled (and written back unscaled, as torch's
  // fused kernels do) when a grad scale is given, times maximize's sign and the rule's grad factor.
  template <bool kScaled>
  static inline T grad_at(const GP& gp, int64_t i, float scale, T gsign) {
    T g = gp.load(i);
    if constexpr (kScaled) {
      g = g / T(scale);
      gp.store(i, g);
    }
    return g * gsign;
  }

  template <bool kScaled>
  static void run_item(const Launch& L, const Item& it, const Ctx c, float scale, T gsign, double* part) {
    // c by value: a local copy cannot alias the stores, so its fields stay in registers
    const TensorPtrs& tp = L.tensors[it.t];
    const uint32_t seed = sr_seed(uint32_t(it.t), step_value(L, tp));
    PP pp = ParamMaker<PP>::make(tp, seed);
    GP gp = make_plain<GP>(tp.grad);  // null (never dereferenced) for a rule that reads no grad
    // Four named policy objects rather than an array: GCC 12 does not vectorise the loop
    // when the state pointers are re-read from a local array (checked with -fopt-info-vec).
    const bool swap = K > 1 && swap01<Rule>(c);  // core/traits.h: slots 0 and 1 trade lists
    const SP sp0 = make_plain<SP>(swap ? tp.state[1] : tp.state[0]);
    const SP sp1 = make_plain<SP>(K > 1 ? (swap ? tp.state[0] : tp.state[1]) : tp.state[0]);
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
      T g = T(0);
      if constexpr (kGrad) g = grad_at<kScaled>(gp, i, scale, gsign);
      T p = pp.load(i);
      T s[kMaxStates];
      if constexpr (K > 0) s[0] = sp0.load(i);  // a rule variant may keep no state (plain SGD)
      if constexpr (K > 1) s[1] = sp1.load(i);
      if constexpr (K > 2) s[2] = sp2.load(i);
      if constexpr (K > 3) s[3] = sp3.load(i);
      if constexpr (KO == 0) Rule::template update<V>(p, g, s, c);  // (KO > 0 returned above)
      if constexpr (kStoreP) pp.store(i, p);
      if constexpr (K > 0 && !(kReadOnly & 1u)) sp0.store(i, s[0]);
      if constexpr (K > 1 && !(kReadOnly & 2u)) sp1.store(i, s[1]);
      if constexpr (K > 2 && !(kReadOnly & 4u)) sp2.store(i, s[2]);
      if constexpr (K > 3 && !(kReadOnly & 8u)) sp3.store(i, s[3]);
    }
  }

  // acc[l] += out[j]^2 for j = l mod kLanes, j < n (the lanes of one item: n is a multiple of kLanes
  // except where the item ends). Shared by the 32-bit and the 8-bit walks: the same sums, bitwise.
  template <class U>
  static void add_squares(double (&acc)[kLanes], const U* out, int n) {
    int j = 0;
    for (; j + kLanes <= n; j += kLanes)
      for (int l = 0; l < kLanes; ++l) acc[l] += double(out[j + l]) * double(out[j + l]);
    for (int l = 0; j < n; ++j, ++l) acc[l] += double(out[j]) * double(out[j]);
  }

  // The item's partials: part[k] = the lanes of output k folded by a fixed pairwise tree.
  static void fold_partials(double (&acc)[KO > 0 ? KO : 1][kLanes], double* part) {
    for (int k = 0; k < KO; ++k) {
      for (int w = kLanes / 2; w > 0; w /= 2)
        for (int j = 0; j < w; ++j) acc[k][j] += acc[k][j + w];
      part[k] = acc[k][0];
    }
  }

  static void zero_lanes(double (&acc)[KO > 0 ? KO : 1][kLanes]) {
    for (int k = 0; k < KO; ++k)
      for (int j = 0; j < kLanes; ++j) acc[k][j] = 0.0;
  }

  // The item in tiles, for rules with per-tensor outputs (KO > 0): part[k] = sum of out[k]^2.
  template <bool kScaled>
  static void run_item_out(const PP& pp, const GP& gp, const SP& sp0, const SP& sp1, const SP& sp2, const SP& sp3,
                           int64_t b, int64_t e, const Ctx c, float scale, T gsign, double* part) {
    constexpr int KOS = KO > 0 ? KO : 1;
    double acc[KOS][kLanes];
    zero_lanes(acc);
    T buf[KOS][kOutTile];
    for (int64_t t0 = b; t0 < e; t0 += kOutTile) {
      const int n = int(e - t0 < kOutTile ? e - t0 : kOutTile);
#pragma GCC ivdep
      for (int j = 0; j < n; ++j) {
        const int64_t i = t0 + j;
        T g = T(0);
        if constexpr (kGrad) g = grad_at<kScaled>(gp, i, scale, gsign);  // a no-grad rule (KOALA's predict) gets 0
        T p = pp.load(i);
        T s[kMaxStates];
        if constexpr (K > 0) s[0] = sp0.load(i);
        if constexpr (K > 1) s[1] = sp1.load(i);
        if constexpr (K > 2) s[2] = sp2.load(i);
        if constexpr (K > 3) s[3] = sp3.load(i);
        T out[KOS];
        Rule::template update<V>(p, g, s, c, out);
        if constexpr (kStoreP) pp.store(i, p);  // core/traits.h: a read-only pass (LAMB's first) stores nothing
        if constexpr (K > 0 && !(kReadOnly & 1u)) sp0.store(i, s[0]);
        if constexpr (K > 1 && !(kReadOnly & 2u)) sp1.store(i, s[1]);
        if constexpr (K > 2 && !(kReadOnly & 4u)) sp2.store(i, s[2]);
        if constexpr (K > 3 && !(kReadOnly & 8u)) sp3.store(i, s[3]);
        for (int k = 0; k < KO; ++k) buf[k][j] = out[k];
      }
      for (int k = 0; k < KO; ++k) add_squares(acc[k], buf[k], n);
    }
    fold_partials(acc, part);
  }

  // ---- tile walk of block-wise (8-bit) states --------------------------------------------------
  static SP make_q8(const Launch& L, const TensorPtrs& tp, int k, uint32_t seed) {
    SP s{};
    s.stream = q8_state_stream(seed, k);
    s.p = static_cast<uint8_t*>(tp.state[k]);
    s.absmax = tp.absmax[k];
    s.block = L.q8_block;
    s.block_shift = __builtin_ctz(unsigned(L.q8_block));
    s.book = L.q8_books[(L.q8_signed_slots >> k) & 1u];
    return s;
  }

  // Decode n codes of one state's block starting at b0 into v (see core/q8.h).
  static void load_block(const SP& sp, int64_t b0, int n, float* v) {
    q8_block_decode(sp.p + b0, n, sp.block_scale(b0), sp.book, v);
  }

  // Requantize n new values of one state's block starting at b0 (see core/q8.h q8_state_code: the
  // optimizer's stochastic rounding).
  static void store_block(const SP& sp, int64_t b0, int n, const float* v) {
    const uint32_t mbits = q8_block_absmax(v, n);
    float m;
    std::memcpy(&m, &mbits, 4);
    const float inv = q8_inv(m);
    if (sp.book.is_signed)
      q8_block_encode_state<true>(v, n, inv, sp.book, q8_block_stream(sp.stream, mbits), 0, sp.p + b0);
    else
      q8_block_encode_state<false>(v, n, inv, sp.book, q8_block_stream(sp.stream, mbits), 0, sp.p + b0);
    sp.absmax[b0 >> sp.block_shift] = m;
  }

  // The rule over one block of 8-bit states decoded into buf0..3 (new values written back there,
  // except for read-only states); a rule with per-tensor outputs writes them to out0, out1.
  // kKeepOld: an element whose grad is not finite keeps its param and states (and adds 0 to the sums).
  template <bool kScaled, bool kKeepOld>
  static void tile_loop(PP& pp, const GP& gp, float* buf0, float* buf1, float* buf2, float* buf3, float* out0,
                        float* out1, int64_t b0, int n, const Ctx c, float scale, T gsign) {
#pragma GCC ivdep
    for (int j = 0; j < n; ++j) {
      const int64_t i = b0 + j;
      const T g = grad_at<kScaled>(gp, i, scale, gsign);
      const T p0 = pp.load(i);
      T s0[kMaxStates], s[kMaxStates];
      s0[0] = T(buf0[j]);
      if constexpr (K > 1) s0[1] = T(buf1[j]);
      if constexpr (K > 2) s0[2] = T(buf2[j]);
      if constexpr (K > 3) s0[3] = T(buf3[j]);
      for (int k = 0; k < K; ++k) s[k] = s0[k];
      T p = p0;
      T o[KO > 0 ? KO : 1];
      if constexpr (KO > 0)
        Rule::template update<V>(p, g, s, c, o);
      else
        Rule::template update<V>(p, g, s, c);
      const bool ok = !kKeepOld || (g - g) == T(0);
      if constexpr (kStoreP) pp.store(i, ok ? p : p0);  // core/traits.h: a read-only pass (LAMB's first) stores nothing
      if constexpr (KO > 0) out0[j] = float(ok ? o[0] : T(0));
      if constexpr (KO > 1) out1[j] = float(ok ? o[1] : T(0));
      if constexpr (!(kReadOnly & 1u)) buf0[j] = float(ok ? s[0] : s0[0]);
      if constexpr (K > 1 && !(kReadOnly & 2u)) buf1[j] = float(ok ? s[1] : s0[1]);
      if constexpr (K > 2 && !(kReadOnly & 4u)) buf2[j] = float(ok ? s[2] : s0[2]);
      if constexpr (K > 3 && !(kReadOnly & 8u)) buf3[j] = float(ok ? s[3] : s0[3]);
    }
  }

  // part: the item's KO partials (as run_item_out), for a rule with per-tensor outputs.
  template <bool kScaled>
  static void run_item_tiled(const Launch& L, const Item& it, const Ctx c, float scale, T gsign, double* part) {
    static_assert(K > 0, "a variant without state has nothing to quantize");
    static_assert(kGrad, "8-bit states are for update rules (they read a grad)");
    static_assert(KO <= 2, "the 8-bit walk keeps at most two per-tensor outputs");
    const TensorPtrs& tp = L.tensors[it.t];
    const uint32_t seed = sr_seed(uint32_t(it.t), step_value(L, tp));
    PP pp = ParamMaker<PP>::make(tp, seed);
    GP gp = make_plain<GP>(tp.grad);
    const bool swap = K > 1 && swap01<Rule>(c);  // core/traits.h: slots 0 and 1 trade lists
    const uint32_t q8seed = sr_seed(0u, step_value(L, tp));  // the step only (core/q8.h q8_state_stream)
    const SP sp0 = make_q8(L, tp, swap ? 1 : 0, q8seed);
    const SP sp1 = make_q8(L, tp, K > 1 ? (swap ? 0 : 1) : 0, q8seed);
    const SP sp2 = make_q8(L, tp, K > 2 ? 2 : 0, q8seed);
    const SP sp3 = make_q8(L, tp, K > 3 ? 3 : 0, q8seed);
    alignas(64) float buf[K][kQ8MaxBlock];
    constexpr int KOS = KO > 0 ? KO : 1;
    alignas(64) float obuf[KOS][KO > 0 ? kQ8MaxBlock : 1];  // the block's per-element outputs
    double acc[KOS][kLanes];
    zero_lanes(acc);
    const int B = L.q8_block;  // a multiple of kLanes: the block's first element is in lane 0
    for (int64_t b0 = it.begin; b0 < it.end; b0 += B) {
      const int n = int(it.end - b0 < B ? it.end - b0 : B);
      float* buf0 = buf[0];
      float* buf1 = buf[K > 1 ? 1 : 0];
      float* buf2 = buf[K > 2 ? 2 : 0];
      float* buf3 = buf[K > 3 ? 3 : 0];
      // the block's states, decoded (q8_block.h); the rule loop overwrites them with the new values
      load_block(sp0, b0, n, buf0);
      if constexpr (K > 1) load_block(sp1, b0, n, buf1);
      if constexpr (K > 2) load_block(sp2, b0, n, buf2);
      if constexpr (K > 3) load_block(sp3, b0, n, buf3);
      // A non-finite grad leaves its element (param and states) as it was: it can neither write
      // NaN into the param nor poison the block's absmax. The common all-finite block runs the loop
      // without the keep-old selects (with them GCC fails to if-convert some rules' loops).
      int bad = 0;
      for (int j = 0; j < n; ++j) {
        const T g = kScaled ? (gp.load(b0 + j) / T(scale)) * gsign : gp.load(b0 + j) * gsign;
        bad |= int(!((g - g) == T(0)));
      }
      float* out0 = obuf[0];
      float* out1 = obuf[KO > 1 ? 1 : 0];
      if (bad == 0)
        tile_loop<kScaled, false>(pp, gp, buf0, buf1, buf2, buf3, out0, out1, b0, n, c, scale, gsign);
      else
        tile_loop<kScaled, true>(pp, gp, buf0, buf1, buf2, buf3, out0, out1, b0, n, c, scale, gsign);
      for (int k = 0; k < KO; ++k) add_squares(acc[k], obuf[k], n);
      if constexpr (!(kReadOnly & 1u)) store_block(sp0, b0, n, buf0);
      if constexpr (K > 1 && !(kReadOnly & 2u)) store_block(sp1, b0, n, buf1);
      if constexpr (K > 2 && !(kReadOnly & 4u)) store_block(sp2, b0, n, buf2);
      if constexpr (K > 3 && !(kReadOnly & 8u)) store_block(sp3, b0, n, buf3);
    }
    if constexpr (KO > 0)
      fold_partials(acc, part);
    else
      (void)part;
  }

  template <bool kScaled>
  static void run_any(const Launch& L, const Item& it, const Ctx c, float scale, T gsign, double* part) {
    if constexpr (kTiled)
      run_item_tiled<kScaled>(L, it, c, scale, gsign, part);
    else
      run_item<kScaled>(L, it, c, scale, gsign, part);
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
      if (skips<Rule>(ctx[t])) continue;  // nothing to do for this tensor at this step
      nitems += (tp.numel + kChunk - 1) / kChunk;
      total += tp.numel;
    }
    Item* items = static_cast<Item*>(std::malloc(sizeof(Item) * size_t(nitems > 0 ? nitems : 1)));
    int64_t w = 0;
    for (int64_t t = 0; t < n; ++t) {
      if (skips<Rule>(ctx[t])) continue;
      for (int64_t b = 0; b < L.tensors[t].numel; b += kChunk) {
        int64_t e = b + kChunk < L.tensors[t].numel ? b + kChunk : L.tensors[t].numel;
        items[w++] = Item{t, b, e};
      }
    }
    // maximize's sign times the rule's global grad factor (core/reduce.h; 1 for most rules)
    const T gsign = ((L.flags & kFlagMaximize) ? T(-1) : T(1)) *
                    T(grad_factor_of<Rule>(L.hyper, rule_flags(L.flags), RedIn{L.global_in, nullptr}));
    const bool scaled = kGrad && L.grad_scale != nullptr;
    const float scale = scaled ? *L.grad_scale : 1.0f;
    // below ~32K elements a parallel region costs more than it saves
    const int nthreads = total < 32768 ? 1 : (L.nthreads > 0 ? L.nthreads : 1);
    double* part = KO > 0 ? static_cast<double*>(std::malloc(sizeof(double) * size_t(KO * (nitems > 0 ? nitems : 1))))
                          : nullptr;
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1)
    for (int64_t i = 0; i < nitems; ++i) {
      double* pi = KO > 0 ? part + KO * i : nullptr;
      if (scaled)
        run_any<true>(L, items[i], ctx[items[i].t], scale, gsign, pi);
      else
        run_any<false>(L, items[i], ctx[items[i].t], scale, gsign, pi);
    }
    if constexpr (KO > 0) {  // fold the items' partials of each tensor in order
      int64_t k = 0;
      for (int64_t t = 0; t < n; ++t) {
        double sum[KO];
        for (int j = 0; j < KO; ++j) sum[j] = 0.0;
        const int64_t nc = skips<Rule>(ctx[t]) ? 0 : num_chunks(L.tensors[t].numel);  // a skipped tensor has no items
        for (int64_t c = nc; c > 0; --c, ++k)
          for (int j = 0; j < KO; ++j) sum[j] += part[KO * k + j];
        for (int j = 0; j < KO; ++j) L.tensors[t].red_out[j] = float(sum[j]);
      }
      std::free(part);
    }
    std::free(items);
    std::free(ctx);
  }
};

// The engine's side of the shared instantiation table (core/dispatch.h).
struct Backend {
  static constexpr bool kF64 = true;
  template <class Rule, int V, class T, class PP, class SP>
  static void run(const Launch& L, const char*) {
    Engine<Rule, V, T, PP, SP>::run(L);
  }
  [[noreturn]] static void fail(const char* what, const std::string& why) {
    throw std::runtime_error(std::string("fusedopt CPU ") + what + ": " + why);
  }
};

template <class Rule>
void dispatch(const Launch& L, const char* what) {
  dispatch_rule<Backend, Rule>(L, what);
}

}  // namespace fusedopt::cpu::FO_ISA
