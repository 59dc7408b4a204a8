// The CUDA reduction engine (core/reduce.h): two-stage, deterministic, no float atomics, no host sync.
// torch-free.
//
// multi-tensor reduce:
//   stage 1  partial_kernel: one block (kRedThreads threads) per kChunk piece of a tensor. Thread j
//            reduces the elements begin + j + k * kRedThreads (k = 0, 1, ...) in that order, in fp64;
//            the block folds its threads by a fixed shared-memory tree and writes
//            workspace[chunk_base[t] + chunk]. Pieces are packed into launches like mta.cuh
//            (kRedPieces limits of launch_plan.h, by-value metadata).
//   stage 2  combine_kernel: one thread per tensor folds its pieces' partials in index order and
//            writes per_tensor[t] (and the fp64 value to workspace[nchunks + t]); total_kernel: one
//            thread folds the tensors in index order and writes total.
// row/col sums: one block per (matrix, block of row_block(C) rows): warps take rows (lanes stride the
// columns, fixed warp-shuffle tree), threads take columns (rows in order) into fp64 column partials;
// then one thread per (matrix, column) folds the pieces in order.
// clip: grid over the pieces; every block computes the coefficient from *total on the device.
#include <cuda_runtime.h>

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "api.h"
#include "mta.cuh"
#include "rowcol_piece.cuh"

namespace fusedopt::cuda {
namespace {

constexpr int kRedThreads = kRedPieces.threads;
static_assert(sizeof(RedMeta) + kRedParamBytes <= kBigArgBytes, "reduction metadata exceeds the kernel-argument budget");

struct RedParams {
  double p;
  const float* grad_scale;
  double* workspace;
};
static_assert(sizeof(RedParams) <= kRedParamBytes, "partial_kernel's arguments outgrew launch_plan.h's budget");

// Fixed-shape block fold of one value per thread (kRedThreads, a power of two).
template <class Tr>
__device__ double block_fold(double v, double* sh) {
  const int tid = int(threadIdx.x);
  sh[tid] = v;
  __syncthreads();
  for (int w = kRedThreads / 2; w > 0; w /= 2) {
    if (tid < w) sh[tid] = Tr::combine(sh[tid], sh[tid + w]);
    __syncthreads();
  }
  return sh[0];
}

template <class S, RedOp Op, bool kScaled>
__global__ void __launch_bounds__(kRedPieces.bound)
    partial_kernel(const __grid_constant__ RedMeta m, const RedParams prm) {
  using Tr = RedTraits<Op>;
  __shared__ double sh[kRedThreads];
  const int b = int(blockIdx.x);
  const int t = m.block_tensor[b];
  const int64_t begin = int64_t(m.block_chunk[b]) * kChunk;
  const int64_t rest = m.numel[t] - begin;
  const int len = rest < kChunk ? int(rest) : int(kChunk);
  const S s = make_plain<S>(const_cast<void*>(m.addr[t]));
  const float scale = kScaled ? *prm.grad_scale : 1.0f;
  double acc = Tr::init();
  for (int i = int(threadIdx.x); i < len; i += kRedThreads) {
    float x = s.load(begin + i);
    if constexpr (kScaled) x = x / scale;
    acc = Tr::combine(acc, Tr::map(double(x), prm.p));
  }
  const double r = block_fold<Tr>(acc, sh);
  if (threadIdx.x == 0) prm.workspace[m.chunk_base[t] + m.block_chunk[b]] = r;
}


struct OutParams {
  double p;
  bool norm;
  float* per_tensor;
  float* total;
  double* per_tensor64;
  double* total64;
  double* per_tensor_ws;  // workspace + total chunks: fp64 per-tensor values (before roots)
  int64_t ntensors;
};
static_assert(sizeof(CombineArgs) + sizeof(void*) + sizeof(OutParams) <= kArgBytes,
              "combine_kernel's arguments exceed the kernel-argument budget");

template <RedOp Op>
__device__ double finish(double r, const OutParams& o) {
  return o.norm ? red_norm<Op>(r, o.p) : r;
}

template <RedOp Op>
__global__ void __launch_bounds__(kCombine.bound) combine_kernel(const __grid_constant__ CombineArgs a, const double* ws, const OutParams o) {
  using Tr = RedTraits<Op>;
  const int i = int(blockIdx.x) * int(blockDim.x) + int(threadIdx.x);
  if (i >= a.n) return;
  double r = Tr::init();
  for (int64_t c = 0; c < a.nchunks[i]; ++c) r = Tr::combine(r, ws[a.chunk_base[i] + c]);
  const int64_t t = a.first + i;
  o.per_tensor_ws[t] = r;
  const double out = finish<Op>(r, o);
  if (o.per_tensor) o.per_tensor[t] = float(out);
  if (o.per_tensor64) o.per_tensor64[t] = out;
}

template <RedOp Op>
__global__ void total_kernel(const OutParams o) {
  using Tr = RedTraits<Op>;
  if (threadIdx.x != 0 || blockIdx.x != 0) return;
  double tot = Tr::init(), nz = 0.0;
  for (int64_t t = 0; t < o.ntensors; ++t) {
    tot = Tr::combine(tot, o.per_tensor_ws[t]);
    nz += o.per_tensor_ws[t] != 0.0 ? 1.0 : 0.0;
  }
  double out = finish<Op>(tot, o);
  if constexpr (Op == RedOp::CountNz) {
    if (o.norm) out = nz;
  }
  if (o.total) *o.total = float(out);
  if (o.total64) *o.total64 = out;
}

// plan_pieces' sink for the reduction kernels: fills RedMeta, hands each full launch to fn(meta, nblocks).
template <class F>
struct RedSink {
  const void* const* data;
  const int64_t* numel;
  const int64_t* first_piece;
  const F& fn;
  RedMeta m{};
  void slot(int s, int64_t t) {
    m.addr[s] = data[t];
    m.numel[s] = numel[t];
    m.chunk_base[s] = first_piece[t];
  }
  void block(int k, int s, int32_t chunk) {
    m.block_tensor[k] = uint16_t(s);
    m.block_chunk[k] = chunk;
  }
  void launch(int nblocks) { fn(m, nblocks); }
  void carry(int s) {
    m.addr[0] = m.addr[s];
    m.numel[0] = m.numel[s];
    m.chunk_base[0] = m.chunk_base[s];
  }
};

// Walk the pieces of every tensor (plan_pieces) and call `launch(meta, nblocks)` whenever a launch is
// full. The piece index is global (chunk_base[t] + chunk), so results do not depend on launch packing.
template <class F>
void for_each_launch(const void* const* data, const int64_t* numel, int64_t ntensors, const F& launch) {
  std::vector<int64_t> first(static_cast<size_t>(ntensors));
  int64_t next = 0;
  for (int64_t t = 0; t < ntensors; ++t) {
    const int64_t nch = num_chunks(numel[t]);
    if (nch > int64_t(INT32_MAX)) throw std::runtime_error("fusedopt CUDA reduce: tensor too large (2^47 elements)");
    first[static_cast<size_t>(t)] = next;
    next += nch;
  }
  plan_pieces(ntensors, [&](int64_t t) { return num_chunks(numel[t]); }, kRedPieces.max_slots, kRedPieces.max_blocks,
              RedSink<F>{data, numel, first.data(), launch});
}

template <class S, RedOp Op, bool kScaled>
void reduce_typed(const ReduceArgs& a) {
  cudaStream_t stream = static_cast<cudaStream_t>(a.stream);
  int64_t nchunks = 0;
  for (int64_t t = 0; t < a.ntensors; ++t) nchunks += num_chunks(a.numel[t]);
  RedParams prm{a.p, a.grad_scale, a.workspace};
  for_each_launch(a.data, a.numel, a.ntensors, [&](const RedMeta& m, int nblocks) {
    partial_kernel<S, Op, kScaled><<<nblocks, kRedThreads, 0, stream>>>(m, prm);
    check_launch("reduce", "partial kernel launch");
  });
  OutParams o{a.p, a.norm, a.per_tensor, a.total, a.per_tensor64, a.total64, a.workspace + nchunks, a.ntensors};
  CombineArgs c{};
  int64_t base = 0;
  for_each_batch(kCombine, a.ntensors, [&](int64_t t0, int n, int threads) {
    c.n = n;
    c.first = t0;
    for (int i = 0; i < n; ++i) {
      c.chunk_base[i] = base;
      c.nchunks[i] = num_chunks(a.numel[t0 + i]);
      base += c.nchunks[i];
    }
    combine_kernel<Op><<<1, threads, 0, stream>>>(c, a.workspace, o);
    check_launch("reduce", "combine kernel launch");
  });
  total_kernel<Op><<<1, 32, 0, stream>>>(o);
  check_launch("reduce", "total kernel launch");
}

template <class S>
void reduce_op(const ReduceArgs& a) {
  with_red_op_scaled(a, [&]<RedOp Op, bool kScaled>() { reduce_typed<S, Op, kScaled>(a); });
}

// ---- row / col sums ----------------------------------------------------------------------------
struct RowColParams {
  const void* data;
  int64_t rows, cols, rb, per_mat;
  double add, inv_r, inv_c;
  float* row_out;
  float* col_out;
  double* ws;
};

template <class S, bool kSquare>
__global__ void __launch_bounds__(kRedPieces.bound) rowcol_piece_kernel(const RowColParams q) {
  const int64_t pc = int64_t(blockIdx.x);
  const int64_t b = pc / q.per_mat, r0 = (pc % q.per_mat) * q.rb;
  const int64_t r1 = r0 + q.rb < q.rows ? r0 + q.rb : q.rows;
  const S s = make_plain<S>(const_cast<void*>(q.data));
  rowcol_piece<kRedThreads, S, kSquare>(s, b, r0, r1, q.rows, q.cols, q.add, q.inv_c, q.row_out, q.ws + pc * q.cols);
}

__global__ void __launch_bounds__(kRowColFill.bound) rowcol_cols_kernel(const RowColParams q, int64_t ncols) {
  for (int64_t bc = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; bc < ncols; bc += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = bc / q.cols, c = bc % q.cols;
    double s = 0.0;
    for (int64_t k = 0; k < q.per_mat; ++k) s += q.ws[(b * q.per_mat + k) * q.cols + c];
    q.col_out[bc] = float(s * q.inv_r);
  }
}

__global__ void __launch_bounds__(kRowColFill.bound) fill_kernel(float* out, int64_t n, float v) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = v;
}

template <class S, bool kSquare>
void rowcol_typed(const RowColArgs& a) {
  cudaStream_t stream = static_cast<cudaStream_t>(a.stream);
  const int64_t B = a.batch, R = a.rows, C = a.cols;
  if (B == 0 || R == 0 || C == 0) {
    const float rv = a.mean && C == 0 ? NAN : 0.0f, cv = a.mean && R == 0 ? NAN : 0.0f;
    if (B * R > 0) fill_kernel<<<unsigned(grid_for(kRowColFill, blocks_of(B * R, kRowColFill.threads))), kRowColFill.threads, 0, stream>>>(a.row_out, B * R, rv);
    if (B * C > 0) fill_kernel<<<unsigned(grid_for(kRowColFill, blocks_of(B * C, kRowColFill.threads))), kRowColFill.threads, 0, stream>>>(a.col_out, B * C, cv);
    check_launch("row_col_sums", "fill kernel launch");
    return;
  }
  RowColParams q;
  q.data = a.data;
  q.rows = R;
  q.cols = C;
  q.rb = row_block(C);
  q.per_mat = (R + q.rb - 1) / q.rb;
  q.add = a.add;
  q.inv_c = a.mean ? 1.0 / double(C) : 1.0;
  q.inv_r = a.mean ? 1.0 / double(R) : 1.0;
  q.row_out = a.row_out;
  q.col_out = a.col_out;
  q.ws = a.workspace;
  const int64_t npieces = B * q.per_mat;
  if (npieces > int64_t(INT32_MAX)) throw std::runtime_error("fusedopt CUDA row_col_sums: too many pieces");
  rowcol_piece_kernel<S, kSquare><<<unsigned(npieces), kRedThreads, 0, stream>>>(q);
  check_launch("row_col_sums", "piece kernel launch");
  const int64_t ncols = B * C;
  rowcol_cols_kernel<<<unsigned(grid_for(kRowColFill, blocks_of(ncols, kRowColFill.threads))), kRowColFill.threads, 0, stream>>>(q, ncols);
  check_launch("row_col_sums", "column kernel launch");
}

template <class S>
void rowcol_sq(const RowColArgs& a) {
  if (a.square) return rowcol_typed<S, true>(a);
  return rowcol_typed<S, false>(a);
}

// ---- clip ----------------------------------------------------------------------------------------
struct ClipParams {
  const float* total;
  float max_norm, eps;
};
static_assert(sizeof(ClipParams) <= kRedParamBytes, "clip_kernel's arguments outgrew launch_plan.h's budget");

template <class S>
__global__ void __launch_bounds__(kRedPieces.bound) clip_kernel(const __grid_constant__ RedMeta m, const ClipParams q) {
  const float coef = clip_coef(*q.total, q.max_norm, q.eps);
  const int b = int(blockIdx.x);
  const int t = m.block_tensor[b];
  const int64_t begin = int64_t(m.block_chunk[b]) * kChunk;
  const int64_t rest = m.numel[t] - begin;
  const int len = rest < kChunk ? int(rest) : int(kChunk);
  const S s = make_plain<S>(const_cast<void*>(m.addr[t]));
  for (int i = int(threadIdx.x); i < len; i += kRedThreads) s.store(begin + i, s.load(begin + i) * coef);
}

template <class S>
void clip_typed(const ClipArgs& a) {
  cudaStream_t stream = static_cast<cudaStream_t>(a.stream);
  ClipParams q{a.total, a.max_norm, a.eps};
  for_each_launch(reinterpret_cast<const void* const*>(a.data), a.numel, a.ntensors,
                  [&](const RedMeta& m, int nblocks) {
                    clip_kernel<S><<<nblocks, kRedThreads, 0, stream>>>(m, q);
                    check_launch("multi_tensor_clip_", "kernel launch");
                  });
}

[[noreturn]] void bad_dtype(const char* what) {
  throw std::runtime_error(std::string("fusedopt CUDA ") + what + ": unsupported dtype (float32, float16, bfloat16)");
}

}  // namespace

void reduce(const ReduceArgs& a) {
  if (a.ntensors <= 0) return;
  switch (a.dt) {
    case Dt::F32: return reduce_op<F32Store<float>>(a);
    case Dt::F16: return reduce_op<F16Store<float>>(a);
    case Dt::BF16: return reduce_op<BF16Store<float>>(a);
    default: bad_dtype("reduce");
  }
}

void row_col(const RowColArgs& a) {
  switch (a.dt) {
    case Dt::F32: return rowcol_sq<F32Store<float>>(a);
    case Dt::F16: return rowcol_sq<F16Store<float>>(a);
    case Dt::BF16: return rowcol_sq<BF16Store<float>>(a);
    default: bad_dtype("row_col_sums");
  }
}

void clip(const ClipArgs& a) {
  if (a.ntensors <= 0) return;
  switch (a.dt) {
    case Dt::F32: return clip_typed<F32Store<float>>(a);
    case Dt::F16: return clip_typed<F16Store<float>>(a);
    case Dt::BF16: return clip_typed<BF16Store<float>>(a);
    default: bad_dtype("multi_tensor_clip_");
  }
}

}  // namespace fusedopt::cuda
