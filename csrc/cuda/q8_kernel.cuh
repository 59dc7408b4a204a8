// The CUDA tile walk of 8-bit block-wise states (core/q8.h): the per-block functor of mta.cuh for
// a rule whose states are uint8 codes + per-block absmax. torch-free. Compiled, never run here.
//
// One CUDA block (kBlockThreads = 512 threads) streams one chunk (kChunkElems elements) of a tensor in
// iterations of kQ8Span = 4096 elements. In an iteration thread t owns the elements
// base + r * 512 + t (r < 8): every load and store is coalesced, and every warp's 32 elements lie in
// one quantization block (block sizes are multiples of 256). Per iteration:
//   1. load p, g and the codes; dequantize with the block's old absmax (map in shared memory);
//   2. run the rule in registers (a non-finite grad leaves its element unchanged); store p;
//      keep the new state values in registers;
//   3. per state the new absmax of every block: a warp max (shuffles) per 32-element segment into
//      shared memory, then one thread per block takes the max over its B / 32 segments
//      (B = 256: 8 segments; the span holds 4096 / B blocks);
//   4. requantize: core/q8.h q8_state_code (stochastic rounding with the state's stream), by its
//      segment form q8_seg_r (the CPU's AVX-512 form: a line per run of evenly spaced map values,
//      about ten ALU operations and three lookups in a 224-byte table per map, kept in shared memory)
//      and, for the few values whose comparison lies within 4 eps of its threshold, q8_state_r with
//      the index of y in the map's non-negative half by branchless binary search in shared memory
//      (8 dependent lookups, which every value took before); store the codes and the new absmax.
// The absmax of a block is written by the one iteration that holds the whole block: kQ8Span is a
// multiple of every block size, and chunks (kChunkElems) are multiples of kQ8Span.
// A rule with per-tensor outputs (kRedOut: LAMB's first pass) sums out[k]^2 per thread in fp64 in its
// fixed element order (an element with a non-finite grad adds 0), folds the CUDA block by the fixed
// tree of block_fold_partials and writes the chunk's partials; rule_kernel.cuh's red_out pass folds
// them per tensor in order. A pass that only reads its states (all read-only) skips steps 3-4.
#pragma once
#include "../core/aux.h"
#include "../core/config.h"
#include "../core/q8.h"
#include "../core/reduce.h"
#include "../core/storage.h"
#include "../core/traits.h"
#include "mta.cuh"

namespace fusedopt::cuda {

constexpr int kQ8Rows = 8;                          // elements per thread per iteration
constexpr int kQ8Span = kBlockThreads * kQ8Rows;    // 4096
constexpr int kQ8Segs = kQ8Span / 32;               // 32-element segments per iteration
static_assert(kQ8Span % kQ8MaxBlock == 0 && kChunk % kQ8Span == 0, "blocks must not straddle iterations");

// Device copies of the two maps and their midpoints ({unsigned, signed}).
static __device__ const float kQ8DevValues[2][256] = {{FO_Q8_UNSIGNED_VALUES}, {FO_Q8_SIGNED_VALUES}};
static __device__ const float kQ8DevMids[2][256] = {{FO_Q8_UNSIGNED_MIDS}, {FO_Q8_SIGNED_MIDS}};  // q8.cu's codec

FO_DEV float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// The chunk's partials of a rule with per-tensor outputs: each thread's fp64 acc[k] folded over the
// CUDA block (kBlockThreads threads, all of them calling) by a fixed shared-memory tree; thread 0
// writes partial[k].
template <int KO>
FO_DEV void block_fold_partials(const double* acc, double* partial) {
  __shared__ double sh[kBlockThreads];
  for (int k = 0; k < KO; ++k) {
    sh[threadIdx.x] = acc[k];
    __syncthreads();
    for (int w = kBlockThreads / 2; w > 0; w /= 2) {
      if (int(threadIdx.x) < w) sh[threadIdx.x] += sh[threadIdx.x + w];
      __syncthreads();
    }
    if (threadIdx.x == 0) partial[k] = sh[0];
    __syncthreads();
  }
}

// The segment tables of the two maps ({unsigned, signed}; core/q8.h q8_build_segments), built once on
// the host; every launch carries them in its functor (kernel arguments), so no copy to the device.
inline const Q8SegLite* q8_seg_tables() {
  struct Tables {
    Q8SegLite t[2];
    Tables() {
      const float values[2][256] = {{FO_Q8_UNSIGNED_VALUES}, {FO_Q8_SIGNED_VALUES}};
      for (int m = 0; m < 2; ++m) {
        float half[256];
        Q8Seg seg;
        q8_fill_half(values[m], m == 1, half);
        if (!q8_build_segments(half, m == 1, &seg))
          throw std::logic_error("fusedopt: 8-bit codebook is not piecewise linear as the encoder expects (internal error)");
        q8_seg_lite(seg, &t[m]);
      }
    }
  };
  static const Tables tables;
  return tables.t;
}

template <class Rule, int V, class PP>
struct Q8RuleStep {
  static constexpr int kMinBlocks = 1;  // the tile walk keeps a block's states in registers (up to 128)
  static constexpr int K = Rule::num_states(V);
  static_assert(K > 0, "8-bit states need a variant with state");
  static_assert(reads_grad<Rule>(), "8-bit states are for update rules (they read a grad)");
  static constexpr unsigned kReadOnly = read_only_states<Rule>(V);  // core/traits.h: loaded, not stored
  static constexpr bool kAllReadOnly = (kReadOnly & ((1u << K) - 1u)) == (1u << K) - 1u;
  static constexpr bool kStoreP = writes_param<Rule>();  // false: a read-only pass (LAMB's first)
  static constexpr bool kAux = HasAux<Rule>;
  static constexpr int KI = red_in_count<Rule>();  // core/reduce.h: per-tensor reduced inputs (LARS)
  static constexpr int KO = red_out_count<Rule>();  // per-tensor outputs (LAMB's first pass)
  static constexpr int KOS = KO > 0 ? KO : 1;
  // elements per block: kCudaChunk, but per-tensor outputs keep kChunk (the glue counts their partials
  // per kChunk piece); both are multiples of kQ8Span, so no quantization block straddles two blocks
  static constexpr int64_t kChunkElems = KO > 0 ? kChunk : kCudaChunk;
  static_assert(kChunkElems % kQ8Span == 0, "blocks must not straddle iterations");
  static_assert(KO == 0 || !HasSkip<Rule, typename Rule::template Ctx<float>>,
                "a rule with kRedOut cannot have skip()");
  static constexpr int kAuxList = 2 + 2 * K;
  static constexpr int kRedInList = kAuxList + (kAux ? 1 : 0);
  static constexpr int kRedOutList = kRedInList + (KI > 0 ? 1 : 0);
  static constexpr int kDepth = kRedOutList + (KO > 0 ? 1 : 0);
  using GP = typename GradOf<PP>::type;
  using Ctx = typename Rule::template Ctx<float>;

  double hyper[kMaxHyper];
  double lr;
  const float* lr_ptr;
  const float* grad_scale;
  const float* found_inf;
  const float* global_in;
  int64_t flags;
  int block;
  uint32_t signed_slots;
  bool step_f64;
  Q8SegLite seg[2];  // q8_seg_tables()

  static Q8RuleStep from(const Launch& L) {
    Q8RuleStep f;
    f.seg[0] = q8_seg_tables()[0];
    f.seg[1] = q8_seg_tables()[1];
    for (int h = 0; h < kMaxHyper; ++h) f.hyper[h] = L.hyper[h];
    f.lr = L.lr;
    f.lr_ptr = L.lr_ptr;
    f.grad_scale = L.grad_scale;
    f.found_inf = L.found_inf;
    f.global_in = L.global_in;
    f.flags = L.flags;
    f.block = L.q8_block;
    f.signed_slots = L.q8_signed_slots;
    f.step_f64 = L.step_f64;
    return f;
  }

  // Metadata lists of one tensor: param, grad, codes of each state, absmax of each state, [aux],
  // [reduced inputs], [the chunk partials of per-tensor outputs].
  struct Lists {
    static void get(const TensorPtrs& tp, void** out) {
      out[0] = tp.param;
      out[1] = tp.grad;
      for (int k = 0; k < K; ++k) out[2 + k] = tp.state[k];
      for (int k = 0; k < K; ++k) out[2 + K + k] = tp.absmax[k];
      if constexpr (kAux) out[kAuxList] = tp.aux;
      if constexpr (KI > 0) out[kRedInList] = const_cast<float*>(tp.red_in);
      if constexpr (KO > 0) out[kRedOutList] = tp.red_out;  // rule_kernel.cuh points it at the partials
    }
  };

  FO_DEV void operator()(const TensorListMeta<kDepth>& m, int b) const {
    if (found_inf != nullptr && *found_inf != 0.0f) return;  // skipped step: touch nothing
    __shared__ float s_val[2][256];
    __shared__ float s_half[2][256];  // core/q8.h q8_fill_half
    __shared__ float s_seg[K][kQ8Segs];
    __shared__ float s_blk[K][kQ8Span / kQ8Tile];
    __shared__ Q8SegLite s_tab[2];
    for (int i = int(threadIdx.x); i < 512; i += int(blockDim.x)) {
      const int m = i >> 8, j = i & 255, z = m ? kQ8ZeroSigned : 0;
      s_val[m][j] = kQ8DevValues[m][j];
      s_half[m][j] = j < 256 - z ? kQ8DevValues[m][z + j] : FO_Q8_INF;
    }
    static_assert(sizeof(Q8SegLite) % 4 == 0, "the tables are copied word by word");
    constexpr int kTabWords = int(2 * sizeof(Q8SegLite) / 4);
    if (int(threadIdx.x) < kTabWords)
      reinterpret_cast<uint32_t*>(s_tab)[threadIdx.x] = reinterpret_cast<const uint32_t*>(seg)[threadIdx.x];

    const int t = mta_slot(m, b);
    const int32_t chunk = mta_chunk(m, b, t);
    const int64_t begin = int64_t(chunk) * kChunkElems;
    const int64_t rest = m.numel[t] - begin;
    const int len = rest < kChunkElems ? int(rest) : int(kChunkElems);
    const double step = step_f64 ? *static_cast<const double*>(m.step[t])
                                 : double(*static_cast<const float*>(m.step[t]));
    const double lr_v = lr_ptr != nullptr ? double(*lr_ptr) : lr;
    double aux = 0.0;
    if constexpr (kAux) aux = double(*static_cast<const float*>(m.addr[kAuxList][t]));
    const float* red_in = nullptr;
    if constexpr (KI > 0) red_in = static_cast<const float*>(m.addr[kRedInList][t]);
    const Ctx c = make_ctx<Rule, float>(hyper, lr_v, step, rule_flags(flags), aux, RedIn{global_in, red_in});

    TensorPtrs tp{};
    tp.param = m.addr[0][t];
    tp.grad = m.addr[1][t];
    const uint32_t seed = sr_seed(m.index[t], step);
    const PP pp = ParamMaker<PP>::make(tp, seed);
    const GP gp = make_plain<GP>(tp.grad);
    uint8_t* codes[K];
    float* absmax[K];
    int sgn[K];
    uint32_t stream[K];  // stochastic rounding: by the step and the state's list (as the CPU walk)
#pragma unroll
    for (int k = 0; k < K; ++k) {
      codes[k] = static_cast<uint8_t*>(m.addr[2 + k][t]);
      absmax[k] = static_cast<float*>(m.addr[2 + K + k][t]);
      sgn[k] = int((signed_slots >> k) & 1u);
      stream[k] = q8_state_stream(sr_seed(0u, step), k);  // the step only, as the CPU walk
    }
    if constexpr (K > 1) {
      if (swap01<Rule>(c)) {  // core/traits.h: slots 0 and 1 trade lists (codes, absmax and map)
        uint8_t* c0 = codes[0];
        codes[0] = codes[1];
        codes[1] = c0;
        float* a0 = absmax[0];
        absmax[0] = absmax[1];
        absmax[1] = a0;
        const int s0 = sgn[0];
        sgn[0] = sgn[1];
        sgn[1] = s0;
        const uint32_t r0 = stream[0];
        stream[0] = stream[1];
        stream[1] = r0;
      }
    }
    const bool scaled = grad_scale != nullptr;
    const float scale = scaled ? *grad_scale : 1.0f;
    const float gsign = ((flags & kFlagMaximize) ? -1.0f : 1.0f) *
                        grad_factor_of<Rule>(hyper, rule_flags(flags), RedIn{global_in, red_in});
    const int shift = __ffs(block) - 1;
    const int segs_per_block = block >> 5;
    const int lane = int(threadIdx.x) & 31, warp = int(threadIdx.x) >> 5;
    double acc[KOS];
#pragma unroll
    for (int k = 0; k < KOS; ++k) acc[k] = 0.0;
    __syncthreads();

    for (int base = 0; base < len; base += kQ8Span) {
      float nv[K][kQ8Rows];
      // 1-2: dequantize, update, store p
#pragma unroll
      for (int r = 0; r < kQ8Rows; ++r) {
        const int li = base + r * kBlockThreads + int(threadIdx.x);
#pragma unroll
        for (int k = 0; k < K; ++k) nv[k][r] = 0.0f;
        if (li < len) {
          const int64_t i = begin + li;
          float g = gp.load(i);
          if (scaled) {
            g = g / scale;
            gp.store(i, g);
          }
          g = g * gsign;
          const float p0 = pp.load(i);
          float s0[kMaxStates], s[kMaxStates];
#pragma unroll
          for (int k = 0; k < K; ++k) {
            s0[k] = s_val[sgn[k]][codes[k][i]] * absmax[k][i >> shift];
            s[k] = s0[k];
          }
          float p = p0;
          const bool ok = (g - g) == 0.0f;  // finite grad
          if constexpr (KO > 0) {
            float o[KOS];
            Rule::template update<V>(p, g, s, c, o);
#pragma unroll
            for (int k = 0; k < KO; ++k) {
              const double x = ok ? double(o[k]) : 0.0;
              acc[k] += x * x;
            }
          } else {
            Rule::template update<V>(p, g, s, c);
          }
          if constexpr (kStoreP) pp.store(i, ok ? p : p0);
#pragma unroll
          for (int k = 0; k < K; ++k) nv[k][r] = ok ? s[k] : s0[k];
        }
      }
      if constexpr (!kAllReadOnly) {  // a read-only pass (LAMB's first) has nothing to requantize
        // 3: absmax of every block of the span (finite values only; absent elements count as 0)
#pragma unroll
        for (int k = 0; k < K; ++k) {
#pragma unroll
          for (int r = 0; r < kQ8Rows; ++r) {
            const float w = warp_max(q8_abs_finite(nv[k][r]));
            if (lane == 0) s_seg[k][r * (kBlockThreads / 32) + warp] = w;
          }
        }
        __syncthreads();
        const int nblk = kQ8Span >> shift;
        if (int(threadIdx.x) < K * nblk) {
          const int k = int(threadIdx.x) / nblk, q = int(threadIdx.x) % nblk;
          float mx = 0.0f;
          for (int s = q * segs_per_block; s < (q + 1) * segs_per_block; ++s) mx = fmaxf(mx, s_seg[k][s]);
          s_blk[k][q] = mx;
          const int64_t first = begin + base + int64_t(q) * block;
          if (first < begin + len && !(kReadOnly & (1u << k))) absmax[k][first >> shift] = mx;
        }
        __syncthreads();
        // 4: requantize and store the codes
#pragma unroll
        for (int r = 0; r < kQ8Rows; ++r) {
          const int li = base + r * kBlockThreads + int(threadIdx.x);
          if (li < len) {
            const int64_t i = begin + li;
            const int q = (r * kBlockThreads + int(threadIdx.x)) >> shift;
#pragma unroll
            for (int k = 0; k < K; ++k) {
              if (kReadOnly & (1u << k)) continue;  // core/traits.h: loaded, not stored
              const float inv = q8_inv(s_blk[k][q]);
              const float x = nv[k][r];
              const bool sg = sgn[k] != 0;
              const float y = q8_state_y(x, inv, sg);
              const float u = q8_uniform(q8_block_stream(stream[k], q8_bits(s_blk[k][q])), i & int64_t(block - 1));
              int rr = q8_seg_r(s_tab[sgn[k]], y, u);
              if (rr < 0) {
                const float* half = s_half[sgn[k]];
                rr = q8_state_r(half, sg, q8_encode_search(half, y), y, u);
              }
              codes[k][i] = uint8_t(q8_state_finish(rr, sg, x, inv));
            }
          }
        }
        __syncthreads();  // s_seg / s_blk are reused by the next iteration
      }
    }
    if constexpr (KO > 0)
      block_fold_partials<KO>(acc, static_cast<double*>(m.addr[kRedOutList][t]) + int64_t(chunk) * KO);
  }
};

}  // namespace fusedopt::cuda
