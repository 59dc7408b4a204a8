// Adafactor's fused step on CUDA (core/adafactor.h): the same four passes as the CPU
// (cpu/adafactor_impl.h), every per-tensor scalar computed on the device, no host sync, no
// host-to-device copy (metadata travels by value as kernel arguments). torch-free.
//
// Stream order of one call (every kernel reads *found_inf first and returns when it is non-zero, so
// a skipped step changes no param, state, step, RMS or grad; the reductions only fill the workspace):
//  -1. with grad_scale: unscale_kernel divides every grad by *grad_scale in place (read on the device);
//   0. reduction engine (reduce.cu): sum p^2 per tensor, fp64, into `psq`;
//   1. scalar_kernel: per tensor, bump the step, write RMS(p), build the AfElemCtx (af_scalars /
//      af_elem_ctx: the CPU's expressions);
//   2. rowcol_kernel: one launch over the pieces (the element passes' pieces) of every factored
//      tensor of a group (a group's column partials fit kAfRowColGroupDoubles: GPT-2 small is one
//      group): the row means of g^2 (+eps1) into rm, and per piece its fp64 column sums into the
//      row/col workspace (each tensor its own region); then factor_kernel: per (tensor, matrix)
//      block the col means (its pieces' column sums folded in piece order), the R and C EMAs
//      (stored), mean R by a fixed block fold, the row and col factors (af_row_factor /
//      af_col_factor / af_row_den) into rf / cf / rd. Same arithmetic, in the same order, as the
//      reduction engine's row_col (reduce.cu), which took two launches per tensor;
//   3. pass_kernel<apply = false>: per piece u (unfactored: the V EMA, stored) and a fixed-tree fp64
//      sum of u^2 into part[piece]; clip_kernel folds each tensor's pieces in order into the clip
//      divisor (af_clipdiv, af_set_clip);
//   4. pass_kernel<apply = true>: recompute u from the factors (or the stored V), af_apply, store p
//      (and exp_avg).
// Pieces: a factored tensor is cut per matrix into blocks of row_block(C) rows (so a piece never
// spans two matrices), an unfactored one into kChunk elements. Sums are folded in fixed orders:
// bitwise the same run to run; not promised bitwise equal to the CPU (other in-piece orders).
// Params fp32, fp16 or bf16; states fp32.
#include <cuda_runtime.h>

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "../core/adafactor.h"
#include "../core/numeric.h"
#include "../core/reduce.h"
#include "../core/storage.h"
#include "adafactor_plan.h"
#include "api.h"
#include "mta.cuh"
#include "rowcol_piece.cuh"

namespace fusedopt::cuda {
namespace {

constexpr int kAfThreads = kAfPieces.threads;  // a power of two (block folds); factor_kernel uses it too
static_assert(kAfFactor.threads == kAfThreads, "factor_kernel and pass_kernel share the block fold");

__device__ __forceinline__ bool skipped(const float* found_inf) { return found_inf != nullptr && *found_inf != 0.0f; }

// Fixed-shape fold of one fp64 value per thread (kAfThreads threads); every thread gets the sum.
__device__ double af_block_sum(double v, double* sh) {
  const int tid = int(threadIdx.x);
  sh[tid] = v;
  __syncthreads();
  for (int w = kAfThreads / 2; w > 0; w /= 2) {
    if (tid < w) sh[tid] = sh[tid] + sh[tid + w];
    __syncthreads();
  }
  const double r = sh[0];
  __syncthreads();  // sh may be reused by the caller
  return r;
}

// ---- 1. steps, RMS(p) and the per-tensor scalars ----------------------------------------------------
static_assert(kAfTensorArgBytes <= kArgBytes, "tensor metadata exceeds the kernel-argument budget");

template <bool kTorch>
__global__ void __launch_bounds__(kAfTensors.bound)
    scalar_kernel(const __grid_constant__ AfTensorMeta m, const AfArgs a, const double* psq,
                              DevCtx* ctx) {
  const int i = int(blockIdx.x) * int(blockDim.x) + int(threadIdx.x);
  if (i >= m.n || skipped(a.found_inf)) return;
  const int64_t t = m.first + i;
  const double step = double(*m.step[i] += 1.0f);
  const double rms = sqrt(psq[t]) / sqrt(double(m.numel[i]));  // 0/0 = nan for an empty tensor
  *m.rms[i] = float(rms);
  const AfScalars sc = af_scalars(a, step, double(float(rms)));  // RMS in fp32, as the CPU for fp32 math
  ctx[t].e = af_elem_ctx<kTorch, float>(a, sc);
  ctx[t].alpha = sc.alpha;
}

// ---- 2. factor EMAs and factors -----------------------------------------------------------------------
static_assert(kAfFactorArgBytes <= kArgBytes, "factor metadata exceeds the kernel-argument budget");

template <bool kTorch>
__global__ void __launch_bounds__(kAfFactor.bound)
    factor_kernel(const __grid_constant__ AfFactorMeta m, const AfArgs a, const DevCtx* ctx) {
  __shared__ double sh[kAfThreads];
  if (skipped(a.found_inf)) return;
  const AfFactorSlot& s = m.s[m.block_slot[blockIdx.x]];
  const AfElemCtx<float> c = ctx[s.t].e;
  const int64_t B = s.batch, Rn = s.rows, Cn = s.cols;
  const float* rm = s.fl;
  float* rf = const_cast<float*>(rm + B * Rn);
  float* cf = rf + B * Rn;
  float* rd = cf + B * Cn;
  const double inv_r = 1.0 / double(Rn);
  for (int64_t b = m.block_j[blockIdx.x]; b < B; b += s.nblocks) {
    double acc = 0.0;
    for (int64_t i = threadIdx.x; i < Rn; i += kAfThreads) {
      const float r = af_ema<kTorch>(s.R[b * Rn + i], rm[b * Rn + i], c);
      s.R[b * Rn + i] = r;
      acc += double(r);
    }
    const float mean = float(af_block_sum(acc, sh) / double(Rn));
    for (int64_t i = threadIdx.x; i < Rn; i += kAfThreads) rf[b * Rn + i] = af_row_factor<kTorch>(s.R[b * Rn + i], mean);
    if (kTorch && threadIdx.x == 0) rd[b] = af_row_den(mean, a.eps1);
    for (int64_t j = threadIdx.x; j < Cn; j += kAfThreads) {
      // the col mean: matrix b's pieces' column sums in piece order (row_col's column fold)
      const double* cp = s.cpart + b * s.per_mat * Cn + j;
      double cs = 0.0;
      for (int64_t k = 0; k < s.per_mat; ++k) cs += cp[k * Cn];
      const float v = af_ema<kTorch>(s.C[b * Cn + j], float(cs * inv_r), c);
      s.C[b * Cn + j] = v;
      cf[b * Cn + j] = af_col_factor<kTorch>(v);
    }
  }
}

// ---- 3./4. the element passes over pieces --------------------------------------------------------------
static_assert(kAfPassArgBytes <= kBigArgBytes, "piece metadata exceeds the kernel-argument budget");

struct PassArgs {
  const float* found_inf;
  const DevCtx* ctx;
  double* part;
  float gsign;
};
static_assert(sizeof(PassArgs) <= kAfPassParamBytes, "pass_kernel's arguments outgrew launch_plan.h's budget");

// The end of one element's work: pass 3 (kApply) writes p (and exp_avg), pass 2 adds u^2 to acc.
template <bool kTorch, bool kApply, bool kBeta1, class PP>
__device__ __forceinline__ void af_finish(const PP& pp, float* m, int64_t i, float u, const AfElemCtx<float>& c,
                                          double& acc) {
  if constexpr (kApply) {
    float mv = kBeta1 ? m[i] : 0.0f;
    pp.store(i, af_apply<kTorch, kBeta1>(pp.load(i), u, &mv, c));
    if constexpr (kBeta1) m[i] = mv;
  } else {
    acc += double(u) * double(u);
  }
}

template <bool kTorch, bool kApply, bool kBeta1, class PP>
__global__ void __launch_bounds__(kAfPieces.bound)
    pass_kernel(const __grid_constant__ AfPieceMeta m, const PassArgs q) {
  __shared__ double sh[kAfThreads];
  if (skipped(q.found_inf)) return;
  const AfPieceSlot& s = m.s[m.block_slot[blockIdx.x]];
  const int64_t piece = m.block_piece[blockIdx.x];
  const AfElemCtx<float> c = q.ctx[s.t].e;
  const PP pp = make_plain<PP>(s.p);
  const PP gp = make_plain<PP>(const_cast<void*>(s.g));
  double acc = 0.0;
  if (s.factored) {
    const int64_t Rn = s.rows, Cn = s.cols, rb = row_block(Cn);
    const int64_t b = piece / s.per_mat, r0 = (piece % s.per_mat) * rb;
    const int64_t r1 = r0 + rb < Rn ? r0 + rb : Rn;
    const float* rf = s.fl + s.batch * Rn;  // after rm [B*R]
    const float* cf = rf + s.batch * Rn + b * Cn;
    const float rd = kTorch ? (rf + s.batch * Rn + s.batch * Cn)[b] : 1.0f;
    const int64_t base = (b * Rn + r0) * Cn;
    const uint32_t len = uint32_t((r1 - r0) * Cn), C32 = uint32_t(Cn);
    for (uint32_t li = threadIdx.x; li < len; li += kAfThreads) {
      const uint32_t lr = li / C32, j = li - lr * C32;
      const int64_t i = base + li;
      const float g = gp.load(i) * q.gsign;
      const float u = af_factored_u<kTorch>(g, rf[b * Rn + r0 + lr], cf[j], rd, c.floor);
      af_finish<kTorch, kApply, kBeta1>(pp, s.m, i, u, c, acc);
    }
  } else {
    const int64_t begin = piece * kChunk;
    const int64_t rest = s.numel - begin;
    const int len = rest < kChunk ? int(rest) : int(kChunk);
    for (int li = int(threadIdx.x); li < len; li += kAfThreads) {
      const int64_t i = begin + li;
      const float g = gp.load(i) * q.gsign;
      float v;
      if constexpr (kApply) {
        v = s.v[i];  // pass 3 reads the V pass 2 stored
      } else {
        v = af_var_update<kTorch>(s.v[i], g, c);
        s.v[i] = v;
      }
      const float u = af_var_u<kTorch>(v, g, c);
      af_finish<kTorch, kApply, kBeta1>(pp, s.m, i, u, c, acc);
    }
  }
  if constexpr (!kApply) {
    const double r = af_block_sum(acc, sh);
    if (threadIdx.x == 0) q.part[s.piece_base + piece] = r;
  }
}

// ---- 2. row means and column partials of g^2 (+eps1), every factored tensor in one launch -------------
struct RowColPassArgs {
  const float* found_inf;
  double* cpart;  // the row/col workspace
  double add;     // eps1 (transformers semantics) or 0
};
static_assert(sizeof(RowColPassArgs) <= kAfPassParamBytes, "rowcol_kernel's arguments outgrew launch_plan.h's budget");

// One block per piece (row_block(C) rows of one matrix): the row means into rm and the piece's fp64
// column sums into its tensor's region of the workspace, by rowcol_piece (rowcol_piece.cuh), the body
// of reduce.cu's row_col: the same sums in the same order.
template <class PP>
__global__ void __launch_bounds__(kAfPieces.bound)
    rowcol_kernel(const __grid_constant__ AfPieceMeta m, const RowColPassArgs q) {
  if (skipped(q.found_inf)) return;
  const AfPieceSlot& s = m.s[m.block_slot[blockIdx.x]];
  const int64_t piece = m.block_piece[blockIdx.x];
  const int64_t Rn = s.rows, Cn = s.cols, rb = row_block(Cn);
  const int64_t b = piece / s.per_mat, r0 = (piece % s.per_mat) * rb;
  const int64_t r1 = r0 + rb < Rn ? r0 + rb : Rn;
  const PP gp = make_plain<PP>(const_cast<void*>(s.g));
  rowcol_piece<kAfThreads, PP, true>(gp, b, r0, r1, Rn, Cn, q.add, 1.0 / double(Cn), const_cast<float*>(s.fl),
                                     q.cpart + s.rc_base + piece * Cn);
}

// ---- AMP: grads divided by *grad_scale in place, before any pass reads them (core/adafactor.h) ---------
template <class PP>
__global__ void __launch_bounds__(kAfPieces.bound)
    unscale_kernel(const __grid_constant__ AfPieceMeta m, const float* found_inf, const float* grad_scale) {
  if (skipped(found_inf)) return;
  const AfPieceSlot& s = m.s[m.block_slot[blockIdx.x]];
  const int64_t piece = m.block_piece[blockIdx.x];
  int64_t begin, len;
  if (s.factored) {  // the piece's rows, contiguous
    const int64_t rb = row_block(s.cols), b = piece / s.per_mat, r0 = (piece % s.per_mat) * rb;
    const int64_t r1 = r0 + rb < s.rows ? r0 + rb : s.rows;
    begin = (b * s.rows + r0) * s.cols;
    len = (r1 - r0) * s.cols;
  } else {
    begin = piece * kChunk;
    len = s.numel - begin < kChunk ? s.numel - begin : kChunk;
  }
  const PP gp = make_plain<PP>(const_cast<void*>(s.g));
  const float scale = *grad_scale;
  for (int64_t li = threadIdx.x; li < len; li += kAfThreads) gp.store(begin + li, gp.load(begin + li) / scale);
}

// ---- the clip divisor: each tensor's pieces folded in order -------------------------------------------
template <bool kTorch>
__global__ void __launch_bounds__(kAfTensors.bound)
    clip_kernel(const __grid_constant__ AfTensorMeta m, const AfArgs a, const double* part,
                            DevCtx* ctx) {
  const int i = int(blockIdx.x) * int(blockDim.x) + int(threadIdx.x);
  if (i >= m.n || skipped(a.found_inf)) return;
  double s = 0.0;
  for (int64_t k = 0; k < m.npieces[i]; ++k) s += part[m.piece_base[i] + k];
  const int64_t t = m.first + i;
  AfScalars sc{};
  sc.alpha = ctx[t].alpha;
  af_set_clip<kTorch>(ctx[t].e, sc, af_clipdiv(s, m.numel[i], a.clip));
}

// ---- host side -----------------------------------------------------------------------------------------
// Calls fn(meta, threads) for the tensors of the call in batches (for_each_batch, kAfTensors).
template <class Fn>
void per_tensor_launches(const AfArgs& a, const AfLayout& L, const Fn& fn) {
  for_each_batch(kAfTensors, a.ntensors, [&](int64_t t0, int n, int threads) {
    AfTensorMeta m{};
    m.first = t0;
    m.n = n;
    for (int i = 0; i < n; ++i) {
      const AfTensor& at = a.tensors[t0 + i];
      m.step[i] = at.step;
      m.rms[i] = at.rms;
      m.numel[i] = at.numel;
      m.piece_base[i] = L.piece_base[size_t(t0 + i)];
      m.npieces[i] = af_pieces(at);
    }
    fn(m, threads);
  });
}

// Packs the pieces of every non-empty tensor into launches (plan_pieces with kAfPieces' limits);
// with factored_only, those of the non-empty factored tensors in [t0, t1) only.
template <class F>
void for_each_piece_launch(const AfArgs& a, const AfLayout& L, float* floats, const F& launch,
                           bool factored_only = false, int64_t t0 = 0, int64_t t1 = -1) {
  for (int64_t t = 0; t < a.ntensors; ++t) {
    const AfTensor& at = a.tensors[t];
    if (af_pieces(at) > int64_t(INT32_MAX)) throw std::runtime_error("fusedopt CUDA adafactor_: tensor too large");
    if (at.factored && at.numel > 0 && row_block(at.cols) * at.cols > int64_t(INT32_MAX))
      throw std::runtime_error("fusedopt CUDA adafactor_: a factored tensor has more than 2^25 columns");
  }
  struct Sink {
    const AfArgs& a;
    const AfLayout& L;
    float* floats;
    const F& fn;
    AfPieceMeta m{};
    void slot(int slot, int64_t t) {
      const AfTensor& at = a.tensors[t];
      AfPieceSlot& s = m.s[slot];
      s.p = at.param;
      s.g = at.grad;
      s.v = at.factored ? nullptr : static_cast<float*>(at.row_or_var);
      s.m = static_cast<float*>(at.exp_avg);
      s.fl = at.factored ? floats + L.fac[size_t(t)] : nullptr;
      s.numel = at.numel;
      s.batch = at.batch;
      s.rows = at.rows;
      s.cols = at.cols;
      s.piece_base = L.piece_base[size_t(t)];
      s.rc_base = L.rc_base[size_t(t)];
      s.per_mat = at.factored ? int32_t((at.rows + row_block(at.cols) - 1) / row_block(at.cols)) : 0;
      s.t = int32_t(t);
      s.factored = at.factored;
    }
    void block(int b, int slot, int32_t piece) {
      m.block_slot[b] = uint16_t(slot);
      m.block_piece[b] = piece;
    }
    void launch(int nblocks) { fn(m, nblocks); }
    void carry(int slot) { m.s[0] = m.s[slot]; }
  };
  plan_pieces(a.ntensors, [&](int64_t t) {
    const AfTensor& at = a.tensors[t];
    if (factored_only && (!at.factored || t < t0 || t >= t1)) return int64_t(0);
    return af_pieces(at);
  }, kAfPieces.max_slots, kAfPieces.max_blocks, Sink{a, L, floats, launch});
}

template <bool kTorch, bool kApply, bool kBeta1, class PP>
void run_pass(const AfArgs& a, const AfLayout& L, float* floats, const PassArgs& q, cudaStream_t stream) {
  for_each_piece_launch(a, L, floats, [&](const AfPieceMeta& m, int nblocks) {
    pass_kernel<kTorch, kApply, kBeta1, PP><<<nblocks, kAfPieces.threads, 0, stream>>>(m, q);
    check_launch("adafactor_", kApply ? "update pass launch" : "RMS(u) pass launch");
  });
}

template <bool kTorch, class PP>
void af_cuda(const AfArgs& a, double* ws, cudaStream_t stream) {
  const int64_t n = a.ntensors;
  const AfLayout L = af_layout(a);
  double* psq = ws + L.psq;
  auto* ctx = reinterpret_cast<DevCtx*>(ws + L.ctx);
  double* part = ws + L.part;
  float* floats = reinterpret_cast<float*>(ws + L.floats);

  // AMP: unscale the grads first
  if (a.grad_scale != nullptr) {
    for_each_piece_launch(a, L, floats, [&](const AfPieceMeta& m, int nblocks) {
      unscale_kernel<PP><<<nblocks, kAfPieces.threads, 0, stream>>>(m, a.found_inf, a.grad_scale);
      check_launch("adafactor_", "unscale launch");
    });
  }

  // 0. sum p^2 per tensor
  AfParamSumSq p0(a, 0, n, psq);
  p0.args.workspace = ws + L.red_ws;
  p0.args.stream = stream;
  reduce(p0.args);

  // 1. steps, RMS(p), scalars
  per_tensor_launches(a, L, [&](const AfTensorMeta& m, int threads) {
    scalar_kernel<kTorch><<<1, threads, 0, stream>>>(m, a, psq, ctx);
    check_launch("adafactor_", "scalar kernel launch");
  });

  // 2. row means and column partials of g^2 (+eps1), then the col means, factor EMAs and factors;
  // group after group of tensors through the one row/col workspace (stream order)
  double* cpart = ws + L.rc_ws;
  struct FactorSink {
    const AfArgs& a;
    const AfLayout& L;
    float* floats;
    const double* cpart;
    DevCtx* ctx;
    cudaStream_t stream;
    AfFactorMeta fm{};
    void slot(int slot, int64_t t, int nblocks) {
      const AfTensor& at = a.tensors[t];
      AfFactorSlot& s = fm.s[slot];
      s.R = static_cast<float*>(at.row_or_var);
      s.C = static_cast<float*>(at.col);
      s.fl = floats + L.fac[size_t(t)];
      s.cpart = cpart + L.rc_base[size_t(t)];
      s.batch = at.batch;
      s.rows = at.rows;
      s.cols = at.cols;
      s.per_mat = (at.rows + row_block(at.cols) - 1) / row_block(at.cols);
      s.t = int32_t(t);
      s.nblocks = int32_t(nblocks);
    }
    void block(int b, int slot, int j) {
      fm.block_slot[b] = uint16_t(slot);
      fm.block_j[b] = uint8_t(j);
    }
    void launch(int nblocks) {
      factor_kernel<kTorch><<<nblocks, kAfFactor.threads, 0, stream>>>(fm, a, ctx);
      check_launch("adafactor_", "factor kernel launch");
    }
  };
  const RowColPassArgs rq{a.found_inf, cpart, kTorch ? 0.0 : a.eps1};
  for (size_t k = 0; k + 1 < L.rc_groups.size(); ++k) {
    const int64_t g0 = L.rc_groups[k], g1 = L.rc_groups[k + 1];
    for_each_piece_launch(a, L, floats, [&](const AfPieceMeta& m, int nblocks) {
      rowcol_kernel<PP><<<nblocks, kAfPieces.threads, 0, stream>>>(m, rq);
      check_launch("adafactor_", "row/col launch");
    }, /*factored_only=*/true, g0, g1);
    plan_factor_blocks(n, [&](int64_t t) {
      const AfTensor& at = a.tensors[t];
      return at.factored && at.numel > 0 && t >= g0 && t < g1 ? at.batch : int64_t(0);
    }, FactorSink{a, L, floats, cpart, ctx, stream});
  }

  // 3. u, sum u^2 per piece, the clip divisor per tensor
  const PassArgs q{a.found_inf, ctx, part, (a.flags & kAfMaximize) ? -1.0f : 1.0f};
  run_pass<kTorch, false, false, PP>(a, L, floats, q, stream);
  per_tensor_launches(a, L, [&](const AfTensorMeta& m, int threads) {
    clip_kernel<kTorch><<<1, threads, 0, stream>>>(m, a, part, ctx);
    check_launch("adafactor_", "clip kernel launch");
  });

  // 4. the update
  if (!kTorch && (a.flags & kAfBeta1))
    run_pass<kTorch, true, true, PP>(a, L, floats, q, stream);
  else
    run_pass<kTorch, true, false, PP>(a, L, floats, q, stream);
}

template <class PP>
void af_sem(const AfArgs& a, double* ws, cudaStream_t stream) {
  if (a.flags & kAfTorch) return af_cuda<true, PP>(a, ws, stream);
  return af_cuda<false, PP>(a, ws, stream);
}

}  // namespace

int64_t adafactor_workspace(const AfArgs& a) { return af_layout(a).total; }

void adafactor(const AfArgs& a, double* workspace, void* stream) {
  if (a.ntensors <= 0) return;
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  switch (a.dt) {
    case Dt::F32: return af_sem<F32Store<float>>(a, workspace, s);
    case Dt::F16: return af_sem<F16Store<float>>(a, workspace, s);
    case Dt::BF16: return af_sem<BF16Store<float>>(a, workspace, s);
    default:
      throw std::runtime_error("fusedopt CUDA adafactor_: unsupported param dtype (float32, float16, bfloat16)");
  }
}

}  // namespace fusedopt::cuda
