// The per-element rule step on CUDA: the per-block functor of mta.cuh that runs one rule of
// core/rules over a chunk, and the dispatch on storage policies (mirrors dispatch<Rule> of
// csrc/cpu/engine.h). torch-free.
//
// Per element, exactly as the CPU engine:
//   g = grad; if grad_scale: g = g / *grad_scale, stored back; if maximize: g = -g;
//   p, s[0..K) loaded through the storage policies; Rule::update<V>(p, g, s, ctx);
//   p and s stored through the policies.
// Per block: ctx = Rule::make<float>(hyper, lr_ptr ? *lr_ptr : lr, step, rule_flags(flags)) from
// the tensor's (already bumped) step, and the stochastic-rounding seed sr_seed(index, step).
//
// Memory access: when every list of the tensor is aligned to the vector width (kW = 4 elements:
// 16 bytes of an fp32 list, 8 of a 2-byte one), each thread moves kW consecutive elements per list
// with one vector load/store; the last len % kW elements of a chunk, and whole chunks of unaligned
// tensors, go through a strided element loop (kW elements in flight per thread).
//
// Reduced values (core/reduce.h): a rule with kGlobalIn reads Launch::global_in and one with kRedIn
// reads its tensor's red_in (one more address list), both dereferenced on the device when the block
// builds its ctx (no host copy: capturable). A rule with kRedOut sums out[k]^2 per thread in fp64 in
// its fixed element order, folds the block by a fixed shared-memory tree and writes the chunk's
// partial to an fp64 workspace (Launch::red_workspace, one more address list pointing at the
// tensor's first partial); red_out_kernel then folds each tensor's partials in order into red_out.
// A rule with kNoStepBump reads the step without bumping it (later pass of a multi-pass rule).
#pragma once
#include <type_traits>
#include <vector>

#include "../core/aux.h"
#include "../core/config.h"
#include "../core/dispatch.h"
#include "../core/reduce.h"
#include "../core/storage.h"
#include "../core/traits.h"
#include "mta.cuh"
#include "q8_kernel.cuh"

namespace fusedopt::cuda {

template <class P>
using RawOf = std::remove_pointer_t<decltype(P::p)>;

// W raw elements moved as one aligned vector.
template <class R, int W>
struct alignas(sizeof(R) * W) Pack {
  R v[W];
};

// ---- vector IO of W consecutive elements [i0, i0 + W) of one list ---------------------------
// Default, safe for any policy: element by element through the policy itself (no alignment
// needed). A policy gets vector IO only through a specialisation below, written knowing that its
// conversions do not depend on the element index.
template <class P, int W>
struct VecIO {
  FO_DEV static bool aligned(const P&) { return true; }
  FO_DEV static void load(const P& pol, int64_t i0, float (&v)[W]) {
#pragma unroll
    for (int j = 0; j < W; ++j) v[j] = pol.load(i0 + j);
  }
  FO_DEV static void store(const P& pol, int64_t i0, const float (&v)[W]) {
#pragma unroll
    for (int j = 0; j < W; ++j) pol.store(i0 + j, v[j]);
  }
};

template <class R, int W>
FO_DEV bool is_aligned(const R* p) {
  return (reinterpret_cast<uintptr_t>(p) % sizeof(Pack<R, W>)) == 0;
}

// One raw pointer `p`, index-free conversions: raw vector in, convert through a copy of the
// policy that points at the registers.
template <class P, int W>
struct PlainVecIO {
  using R = RawOf<P>;
  using Pk = Pack<R, W>;
  FO_DEV static bool aligned(const P& pol) { return is_aligned<R, W>(pol.p); }
  FO_DEV static void load(const P& pol, int64_t i0, float (&v)[W]) {
    Pk r = *reinterpret_cast<const Pk*>(pol.p + i0);
    P view = pol;
    view.p = r.v;
#pragma unroll
    for (int j = 0; j < W; ++j) v[j] = view.load(j);
  }
  FO_DEV static void store(const P& pol, int64_t i0, const float (&v)[W]) {
    Pk r;
    P view = pol;
    view.p = r.v;
#pragma unroll
    for (int j = 0; j < W; ++j) view.store(j, v[j]);
    *reinterpret_cast<Pk*>(pol.p + i0) = r;
  }
};
template <int W> struct VecIO<F32Store<float>, W> : PlainVecIO<F32Store<float>, W> {};
template <int W> struct VecIO<BF16Store<float>, W> : PlainVecIO<BF16Store<float>, W> {};
template <int W> struct VecIO<F16Store<float>, W> : PlainVecIO<F16Store<float>, W> {};

// Stochastic rounding: the random bits depend on the element index, so stores go element by
// element through the policy with the true index; loads (plain bf16) are vectorised.
template <int W>
struct VecIO<BF16SRStore<float>, W> {
  using P = BF16SRStore<float>;
  FO_DEV static bool aligned(const P& pol) { return is_aligned<uint16_t, W>(pol.p); }
  FO_DEV static void load(const P& pol, int64_t i0, float (&v)[W]) { PlainVecIO<P, W>::load(pol, i0, v); }
  FO_DEV static void store(const P& pol, int64_t i0, const float (&v)[W]) {
#pragma unroll
    for (int j = 0; j < W; ++j) pol.store(i0 + j, v[j]);
  }
};

// Kahan: two bf16 lists (hi, compensation), both vectorised.
template <int W>
struct VecIO<BF16KahanStore<float>, W> {
  using P = BF16KahanStore<float>;
  using Pk = Pack<uint16_t, W>;
  FO_DEV static bool aligned(const P& pol) { return is_aligned<uint16_t, W>(pol.p) && is_aligned<uint16_t, W>(pol.c); }
  FO_DEV static void load(const P& pol, int64_t i0, float (&v)[W]) {
    Pk rp = *reinterpret_cast<const Pk*>(pol.p + i0);
    Pk rc = *reinterpret_cast<const Pk*>(pol.c + i0);
    P view{rp.v, rc.v};
#pragma unroll
    for (int j = 0; j < W; ++j) v[j] = view.load(j);
  }
  FO_DEV static void store(const P& pol, int64_t i0, const float (&v)[W]) {
    Pk rp, rc;
    P view{rp.v, rc.v};
#pragma unroll
    for (int j = 0; j < W; ++j) view.store(j, v[j]);
    *reinterpret_cast<Pk*>(pol.p + i0) = rp;
    *reinterpret_cast<Pk*>(pol.c + i0) = rc;
  }
};

// Param policies that read an extra list (after the states) from TensorPtrs::comp.
template <class P> struct UsesComp : std::false_type {};
template <class T> struct UsesComp<BF16KahanStore<T>> : std::true_type {};

constexpr size_t max3(size_t a, size_t b, size_t c) { return a > b ? (a > c ? a : c) : (b > c ? b : c); }

// ---- the per-block functor ----------------------------------------------------------------------
template <class Rule, int V, class PP, class SP>
struct RuleStep {
  // two blocks of 512 threads per SM (<= 64 registers): half the threads an SM holds, enough bytes in
  // flight for a streaming kernel; one block (up to 128 registers) left a quarter and cost bandwidth
  static constexpr int kMinBlocks = 2;
  static constexpr int K = Rule::num_states(V);
  static constexpr int KS = K > 0 ? K : 1;  // array extent (a rule may have no state)
  static constexpr unsigned kReadOnly = read_only_states<Rule>(V);  // core/traits.h: loaded, not stored
  static constexpr bool kComp = UsesComp<PP>::value;
  static constexpr bool kAux = HasAux<Rule>;  // one more address list: the per-tensor aux scalar
  static constexpr int kAuxList = 2 + K + (kComp ? 1 : 0);
  static constexpr int KI = red_in_count<Rule>();
  static constexpr int KO = red_out_count<Rule>();
  static constexpr int KOS = KO > 0 ? KO : 1;
  static constexpr int kRedInList = kAuxList + (kAux ? 1 : 0);
  static constexpr int kRedOutList = kRedInList + (KI > 0 ? 1 : 0);
  static constexpr int kDepth = kRedOutList + (KO > 0 ? 1 : 0);
  using GP = typename GradOf<PP>::type;
  using Ctx = typename Rule::template Ctx<float>;
  static constexpr bool kGrad = reads_grad<Rule>();  // core/traits.h: list 1 is null otherwise
  // a skipped tensor's blocks return before writing partials: per-tensor outputs and skip() do not mix
  static_assert(KO == 0 || !HasSkip<Rule, Ctx>, "a rule with kRedOut cannot have skip()");
  static constexpr bool kStoreP = writes_param<Rule>();
  // vector width in elements: 4, so a 16-byte vector of fp32 lists and an 8-byte one of 2-byte lists.
  // Eight 2-byte elements per list (16-byte vectors everywhere) need more than the 64 registers of
  // kMinBlocks = 2 when every list is 2 bytes wide (bf16 params and states): they spilled 150-230 bytes.
  static constexpr int kW = 4;
  static_assert(16 % max3(sizeof(RawOf<PP>), sizeof(RawOf<GP>), sizeof(RawOf<SP>)) == 0, "vectors of whole elements");
  static_assert(PP::kTile == 1 && SP::kTile == 1, "tiled (block-wise) storage needs a tile walk");
  // elements per block: kCudaChunk, but a rule with per-tensor outputs keeps kChunk (its partials are
  // counted per kChunk piece by the glue: csrc/torch/ops.cpp sizes the workspace)
  static constexpr int64_t kChunkElems = KO > 0 ? kChunk : kCudaChunk;
  static_assert(kChunkElems % kW == 0, "chunks must keep vector alignment");

  double hyper[kMaxHyper];
  double lr;
  const float* lr_ptr;
  const float* grad_scale;
  const float* found_inf;
  const float* global_in;
  int64_t flags;
  bool step_f64;

  static RuleStep from(const Launch& L) {
    RuleStep f;
    for (int h = 0; h < kMaxHyper; ++h) f.hyper[h] = L.hyper[h];
    f.lr = L.lr;
    f.lr_ptr = L.lr_ptr;
    f.grad_scale = L.grad_scale;
    f.found_inf = L.found_inf;
    f.global_in = L.global_in;
    f.flags = L.flags;
    f.step_f64 = L.step_f64;
    return f;
  }

  // The metadata lists of one tensor: param, grad, states, [comp].
  struct Lists {
    static void get(const TensorPtrs& tp, void** out) {
      out[0] = tp.param;
      out[1] = tp.grad;
      for (int k = 0; k < K; ++k) out[2 + k] = tp.state[k];
      if constexpr (kComp) out[2 + K] = tp.comp;
      if constexpr (kAux) out[kAuxList] = tp.aux;
      if constexpr (KI > 0) out[kRedInList] = const_cast<float*>(tp.red_in);
      if constexpr (KO > 0) out[kRedOutList] = tp.red_out;  // run() points it at the partials
    }
  };

  struct Policies {
    PP pp;
    GP gp;
    SP sp[KS];
  };

  FO_DEV void compute(float& p, float g, float (&s)[KS][kW], int j, const Ctx& c, double* acc) const {
    float sj[kMaxStates];
#pragma unroll
    for (int k = 0; k < K; ++k) sj[k] = s[k][j];
    if constexpr (KO > 0) {
      float out[KOS];
      Rule::template update<V>(p, g, sj, c, out);
#pragma unroll
      for (int k = 0; k < KO; ++k) acc[k] += double(out[k]) * double(out[k]);
    } else {
      (void)acc;
      Rule::template update<V>(p, g, sj, c);
    }
#pragma unroll
    for (int k = 0; k < K; ++k) s[k][j] = sj[k];
  }

  // kW consecutive elements [i0, i0 + kW), all lists aligned.
  FO_DEV void vec_tile(const Policies& P, int64_t i0, const Ctx& c, bool scaled, float scale, float gsign,
                       double* acc) const {
    float g[kW] = {}, p[kW], s[KS][kW];
    if constexpr (kGrad) VecIO<GP, kW>::load(P.gp, i0, g);
    VecIO<PP, kW>::load(P.pp, i0, p);
#pragma unroll
    for (int k = 0; k < K; ++k) VecIO<SP, kW>::load(P.sp[k], i0, s[k]);
    if (kGrad && scaled) {
#pragma unroll
      for (int j = 0; j < kW; ++j) g[j] = g[j] / scale;
      VecIO<GP, kW>::store(P.gp, i0, g);  // unscaled grads are written back, as on the CPU
    }
#pragma unroll
    for (int j = 0; j < kW; ++j) compute(p[j], g[j] * gsign, s, j, c, acc);
    if constexpr (kStoreP) VecIO<PP, kW>::store(P.pp, i0, p);
#pragma unroll
    for (int k = 0; k < K; ++k)
      if (!(kReadOnly & (1u << k))) VecIO<SP, kW>::store(P.sp[k], i0, s[k]);
  }

  // Elements begin + first + threadIdx.x + r * blockDim.x (r < kW) below begin + len.
  FO_DEV void strided_tile(const Policies& P, int64_t begin, int first, int len, const Ctx& c, bool scaled,
                           float scale, float gsign, double* acc) const {
    float g[kW] = {}, p[kW], s[KS][kW];
#pragma unroll
    for (int r = 0; r < kW; ++r) {
      const int li = first + int(threadIdx.x) + r * int(blockDim.x);
      if (li < len) {
        const int64_t i = begin + li;
        if constexpr (kGrad) g[r] = P.gp.load(i);
        p[r] = P.pp.load(i);
#pragma unroll
        for (int k = 0; k < K; ++k) s[k][r] = P.sp[k].load(i);
      }
    }
#pragma unroll
    for (int r = 0; r < kW; ++r) {
      const int li = first + int(threadIdx.x) + r * int(blockDim.x);
      if (li < len) {
        const int64_t i = begin + li;
        if (kGrad && scaled) {
          g[r] = g[r] / scale;
          P.gp.store(i, g[r]);
        }
        compute(p[r], g[r] * gsign, s, r, c, acc);
        if constexpr (kStoreP) P.pp.store(i, p[r]);
#pragma unroll
        for (int k = 0; k < K; ++k)
          if (!(kReadOnly & (1u << k))) P.sp[k].store(i, s[k][r]);
      }
    }
  }

  FO_DEV void operator()(const TensorListMeta<kDepth>& m, int b) const {
    if (found_inf != nullptr && *found_inf != 0.0f) return;  // skipped step: touch nothing
    const int t = mta_slot(m, b);
    const int32_t chunk = mta_chunk(m, b, t);
    const int64_t begin = int64_t(chunk) * kChunkElems;
    const int64_t rest = m.numel[t] - begin;
    const int len = rest < kChunkElems ? int(rest) : int(kChunkElems);

    const double step = step_f64 ? *static_cast<const double*>(m.step[t])
                                 : double(*static_cast<const float*>(m.step[t]));
    const double lr_v = lr_ptr != nullptr ? double(*lr_ptr) : lr;
    double aux = 0.0;  // already advanced by the aux pass (aux_kernel below)
    if constexpr (kAux) aux = double(*static_cast<const float*>(m.addr[kAuxList][t]));
    const float* red_in = nullptr;
    if constexpr (KI > 0) red_in = static_cast<const float*>(m.addr[kRedInList][t]);
    const Ctx c = make_ctx<Rule, float>(hyper, lr_v, step, rule_flags(flags), aux, RedIn{global_in, red_in});
    if (skips<Rule>(c)) return;  // e.g. a Lookahead step that does not sync: touch nothing

    TensorPtrs tp{};
    tp.param = m.addr[0][t];
    tp.grad = m.addr[1][t];
#pragma unroll
    for (int k = 0; k < K; ++k) tp.state[k] = m.addr[2 + k][t];
    if constexpr (K > 1) {
      if (swap01<Rule>(c)) {  // core/traits.h: slots 0 and 1 trade lists for this tensor and step
        void* s0 = tp.state[0];
        tp.state[0] = tp.state[1];
        tp.state[1] = s0;
      }
    }
    if constexpr (kComp) tp.comp = m.addr[2 + K][t];
    tp.step = m.step[t];
    tp.numel = m.numel[t];
    Policies P;
    P.pp = ParamMaker<PP>::make(tp, sr_seed(m.index[t], step));
    P.gp = make_plain<GP>(tp.grad);
#pragma unroll
    for (int k = 0; k < K; ++k) P.sp[k] = make_plain<SP>(tp.state[k]);

    const bool scaled = grad_scale != nullptr;
    const float scale = scaled ? *grad_scale : 1.0f;
    const float gsign = ((flags & kFlagMaximize) ? -1.0f : 1.0f) *
                        grad_factor_of<Rule>(hyper, rule_flags(flags), RedIn{global_in, red_in});

    bool vec = VecIO<PP, kW>::aligned(P.pp) && (!kGrad || VecIO<GP, kW>::aligned(P.gp));
#pragma unroll
    for (int k = 0; k < K; ++k) vec = vec && VecIO<SP, kW>::aligned(P.sp[k]);

    double acc[KOS];
#pragma unroll
    for (int k = 0; k < KOS; ++k) acc[k] = 0.0;
    int done = 0;
    if (vec) {
      const int nvec = len / kW;
      for (int v = int(threadIdx.x); v < nvec; v += int(blockDim.x))
        vec_tile(P, begin + int64_t(v) * kW, c, scaled, scale, gsign, acc);
      done = nvec * kW;
    }
    for (int first = done; first < len; first += kW * int(blockDim.x))
      strided_tile(P, begin, first, len, c, scaled, scale, gsign, acc);
    if constexpr (KO > 0)  // fixed-tree block fold of each output (q8_kernel.cuh); thread 0 writes the chunk's partials
      block_fold_partials<KO>(acc, static_cast<double*>(m.addr[kRedOutList][t]) + int64_t(chunk) * KO);
  }
};

// ---- aux pass (rules with a per-tensor scalar state, core/aux.h) ------------------------------------
// After the step bump and before the main pass, in stream order: one thread per tensor advances
// its aux from its (already bumped) step. Gated on *found_inf like the other passes.
static_assert(sizeof(AuxArgs) <= kArgBytes, "aux pass arguments exceed the kernel-argument budget");

template <class Rule>
__global__ void __launch_bounds__(kAuxPass.bound) aux_kernel(const __grid_constant__ AuxArgs a) {
  const int i = int(threadIdx.x);
  if (i >= a.n) return;
  if (a.found_inf != nullptr && *a.found_inf != 0.0f) return;
  const double step = a.f64 ? *static_cast<const double*>(a.step[i]) : double(*static_cast<const float*>(a.step[i]));
  *a.aux[i] = Rule::advance_aux(a.hyper, step, *a.aux[i]);
}

template <class Rule>
void advance_aux(const Launch& L, const char* what) {
  if constexpr (HasAux<Rule>) {
    cudaStream_t stream = static_cast<cudaStream_t>(L.stream);
    AuxArgs a;
    for (int h = 0; h < kMaxHyper; ++h) a.hyper[h] = L.hyper[h];
    a.found_inf = L.found_inf;
    a.f64 = L.step_f64;
    for_each_batch(kAuxPass, L.ntensors, [&](int64_t t0, int n, int threads) {
      a.n = n;
      for (int i = 0; i < n; ++i) {
        if (L.tensors[t0 + i].aux == nullptr)
          throw std::runtime_error(std::string("fusedopt CUDA ") + what + ": missing per-tensor scalar state");
        a.step[i] = L.tensors[t0 + i].step;
        a.aux[i] = static_cast<float*>(L.tensors[t0 + i].aux);
      }
      aux_kernel<Rule><<<1, threads, 0, stream>>>(a);
      check_launch(what, "aux-scalar kernel launch");
    });
  } else {
    (void)L;
    (void)what;
  }
}

// ---- per-tensor outputs: fold each tensor's chunk partials in order (rules with kRedOut) ---------------
static_assert(sizeof(RedOutArgs) <= kArgBytes, "red_out arguments exceed the kernel-argument budget");

// static: this header is included by every kernel shard; one definition per translation unit
static __global__ void __launch_bounds__(kRedOutFold.bound) red_out_kernel(const __grid_constant__ RedOutArgs a) {
  const int i = int(threadIdx.x);
  if (i >= a.n) return;
  if (a.found_inf != nullptr && *a.found_inf != 0.0f) return;  // skipped step: partials were not written
  for (int j = 0; j < a.k; ++j) {
    double s = 0.0;
    for (int64_t c = 0; c < a.nchunks[i]; ++c) s += a.partials[(a.base[i] + c) * a.k + j];
    a.out[i][j] = float(s);
  }
}

// The element pass Fn (RuleStep or Q8RuleStep) of a rule with per-tensor outputs: its metadata's
// red_out list points at each tensor's first chunk partial in the fp64 workspace; then red_out_kernel
// folds each tensor's partials in order into red_out.
template <class Rule, class Fn>
void run_red_out(const Launch& L, const char* what) {
  static_assert(Fn::KO > 0, "for rules with per-tensor outputs");
  if (L.ntensors <= 0) return;
  if (L.red_workspace == nullptr)
    throw std::runtime_error(std::string("fusedopt CUDA ") + what + ": missing the reduction workspace");
  // the metadata's red_out list points at each tensor's first chunk partial
  std::vector<TensorPtrs> tps(L.tensors, L.tensors + L.ntensors);
  std::vector<int64_t> base(size_t(L.ntensors));
  int64_t b = 0;
  for (int64_t t = 0; t < L.ntensors; ++t) {
    base[size_t(t)] = b;
    tps[size_t(t)].red_out = reinterpret_cast<float*>(L.red_workspace + b * Fn::KO);
    b += num_chunks(L.tensors[t].numel);
  }
  Launch L2 = L;
  L2.tensors = tps.data();
  if constexpr (!NoStepBump<Rule>) bump_steps(L, what);
  multi_tensor_apply<Fn::kDepth, typename Fn::Lists>(L2, Fn::from(L2), what);
  cudaStream_t stream = static_cast<cudaStream_t>(L.stream);
  RedOutArgs a;
  a.partials = L.red_workspace;
  a.found_inf = L.found_inf;
  a.k = Fn::KO;
  for_each_batch(kRedOutFold, L.ntensors, [&](int64_t t0, int n, int threads) {
    a.n = n;
    for (int i = 0; i < n; ++i) {
      a.out[i] = L.tensors[t0 + i].red_out;
      a.base[i] = base[size_t(t0 + i)];
      a.nchunks[i] = num_chunks(L.tensors[t0 + i].numel);
    }
    red_out_kernel<<<1, threads, 0, stream>>>(a);
    check_launch(what, "per-tensor output kernel launch");
  });
}

// ---- the engine's side of the shared instantiation table (core/dispatch.h) ------------------------
template <class Rule, int V, class PP, class SP>
void run(const Launch& L, const char* what) {
  using Fn = RuleStep<Rule, V, PP, SP>;
  if constexpr (Fn::KO > 0) return run_red_out<Rule, Fn>(L, what);
  if (L.nstates < Fn::K)
    throw std::runtime_error(std::string("fusedopt CUDA ") + what + ": variant " + std::to_string(V) +
                                " needs " + std::to_string(Fn::K) + " state lists, got " +
                                std::to_string(L.nstates));
  if (L.ntensors <= 0) return;
  if constexpr (!NoStepBump<Rule>) bump_steps(L, what);
  advance_aux<Rule>(L, what);
  multi_tensor_apply<Fn::kDepth, typename Fn::Lists>(L, Fn::from(L), what);
}

template <class Rule, int V, class PP>
void run_q8(const Launch& L, const char* what) {
  using Fn = Q8RuleStep<Rule, V, PP>;
  if (L.nstates < Fn::K)
    throw std::runtime_error(std::string("fusedopt CUDA ") + what + ": variant " + std::to_string(V) +
                             " needs " + std::to_string(Fn::K) + " state lists, got " + std::to_string(L.nstates));
  if constexpr (Fn::KO > 0) return run_red_out<Rule, Fn>(L, what);  // LAMB's first pass
  if (L.ntensors <= 0) return;
  if constexpr (!NoStepBump<Rule>) bump_steps(L, what);  // a later pass (LAMB's second) reads the bumped step
  advance_aux<Rule>(L, what);
  multi_tensor_apply<Fn::kDepth, typename Fn::Lists>(L, Fn::from(L), what);
}

struct Backend {
  static constexpr bool kF64 = false;
  template <class Rule, int V, class T, class PP, class SP>
  static void run(const Launch& L, const char* what) {
    if constexpr (SP::kTile > 1) {
      run_q8<Rule, V, PP>(L, what);
    } else {
      cuda::run<Rule, V, PP, SP>(L, what);
    }
  }
  [[noreturn]] static void fail(const char* what, const std::string& why) {
    throw std::runtime_error(std::string("fusedopt CUDA ") + what + ": " + why);
  }
};

template <class Rule>
void dispatch(const Launch& L, const char* what) {
  dispatch_rule<Backend, Rule>(L, what);
}

}  // namespace fusedopt::cuda
