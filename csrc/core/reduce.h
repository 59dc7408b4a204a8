// The reduction engine: one per backend, shared by every cross-tensor rule (LAMB, LARS, Adan's
// global clipping, clip_grad_norm_, Adafactor, KOALA). torch-free.
//
// ==== 1. Stand-alone reductions (ops torch.ops.fusedopt.multi_tensor_sumsq / multi_tensor_norm /
//         row_col_sums, see csrc/torch/reduce_ops.cpp and python/fusedopt/reduce.py) =============
//
// multi_tensor reduce (ReduceArgs): over a list of tensors of one device and one dtype, computes
//   per_tensor[t] = R_t = reduce over the elements x of tensor t of f(x)
//   total         = combine over t of R_t
// with f / reduce / combine picked by RedOp:
//   SumSq   f = x^2,     sum        (the building block: grad norms, ||p||, ||u||)
//   SumAbs  f = |x|,     sum
//   SumPow  f = |x|^p,   sum        (any real p; p < 0 follows IEEE: |0|^p = inf)
//   MaxAbs  f = |x|,     max        (NaN propagates)
//   MinAbs  f = |x|,     min        (NaN propagates)
//   CountNz f = x != 0,  count      (NaN counts as non-zero, as torch)
// x is the element in fp32 (fp64 for fp64 tensors), divided by *grad_scale first when grad_scale is
// set (the AMP unscale the element-wise pass applies, in the same fp32 arithmetic), then widened to
// fp64. All accumulation is in fp64 (exact squares of fp32 values).
// With `norm` set the outputs are p-norms in torch.linalg.vector_norm's sense: per_tensor[t] is the
// norm of tensor t, total is the norm of the vector of per-tensor norms (torch.nn.utils
// clip_grad_norm_'s definition; for p = 0 that counts the tensors with a non-zero norm, as torch).
// Outputs are fp32 (per_tensor[ntensors], total[1]); empty tensors reduce to the identity (0 for
// sums and max, +inf for min) and are never read.
//
// row/col sums (RowColArgs): for one tensor viewed as [B, R, C] (B = product of the leading dims,
// R, C = the last two dims, contiguous), with u = x^2 + add (square) or x + add:
//   rows[b, r] = sum_c u[b, r, c]        (shape [..., R]: Adafactor's row statistic, over the last dim)
//   cols[b, c] = sum_r u[b, r, c]        (shape [..., C]: over the second-to-last dim)
// optionally divided by C (rows) and R (cols) when `mean` is set. fp64 accumulation, fp32 outputs.
//
// ---- Determinism (both backends) -----------------------------------------------------------------
// Bitwise the same results run to run, for any thread count, on every CPU ISA:
//   * work is cut into fixed pieces that depend only on the shapes: chunks of kChunk elements of
//     each tensor (multi-tensor reduce) or blocks of row_block(C) rows of each matrix (row/col);
//   * inside a piece the CPU accumulates into kLanes fp64 lanes (element i of the piece goes to
//     lane i % kLanes) combined by a fixed pairwise tree; the GPU gives each of its fixed number of
//     threads a fixed strided set of elements and combines by a fixed shared-memory tree;
//   * stage 2 combines the per-piece fp64 partials of a tensor (and then the per-tensor values) in
//     index order. No float atomics anywhere; thread count only decides who computes a piece.
//   Squares of fp32 inputs are exact in fp64, so FMA contraction could not change them; the build
//   uses -ffp-contract=off / --fmad=false anyway. CPU and GPU results are NOT promised to be equal
//   bit for bit (different in-piece orders), only each run to run.
//
// ---- No host sync -----------------------------------------------------------------------------------
//   CUDA: partials live in a device workspace (a torch-allocated fp64 tensor), stage 2 is a kernel,
//   outputs are device tensors; nothing is copied to the host, so calls are CUDA-graph capturable.
//   CPU: everything is host memory already.
//
// ==== 2. Element-wise rules that read or produce reduced values ("reduce then element-wise") ==========
//
// The element-wise engines (cpu/engine.h, cuda/rule_kernel.cuh) give a rule three optional hooks:
//   static constexpr int kGlobalIn = g;  // reads g global fp32 values: Launch::global_in[0..g)
//   static constexpr int kRedIn = k;     // reads k fp32 values of its own tensor: TensorPtrs::red_in[0..k)
//   static constexpr int kRedOut = k;    // produces k per-tensor sums: update() gets `T* out`, writes
//                                        // out[j] for the element; the engine sums them (fp64 chunk
//                                        // partials, fixed-order combine) into TensorPtrs::red_out[j]
//   (a pass that only reads, LAMB's first, declares core/traits.h's kWritesParam = false and every
//    state read-only: the engine then stores neither the param nor the states)
//   static constexpr bool kNoStepBump = true;  // a later pass of a multi-pass rule: reads the step
//                                              // the first pass bumped, does not bump it again
// A rule may also scale every grad element by a global factor (Adan's clip coefficient):
//   FO_HD static float grad_factor(const double* hyper, int rflags, const RedIn& r);
// computed once per call (CPU) / per block (CUDA) and folded into the grad sign (maximize), so the
// element loop costs nothing more.
// A rule with kGlobalIn or kRedIn builds its ctx with
//   template <class T> static Ctx<T> make(const double* hyper, double lr, double step, int rflags,
//                                         const RedIn& r);   // r.global[j], r.tensor[j]
// and a rule with kRedOut updates with
//   template <int V, class T> static void update(T& p, T g, T* s, const Ctx<T>& c, T* out);
// The op of such a rule has, after `flags`, the arguments `Tensor? global_in=None` (kGlobalIn > 0,
// fp32, >= g elements), `Tensor? tensor_in=None` (kRedIn > 0, fp32 [n, k] contiguous) and
// `Tensor(z!)? tensor_out=None` (kRedOut > 0, fp32 [n, k], written), on the params' device.
// CPU: make() runs on the host after the reduction that filled the buffers (same stream of calls),
// so the values are read on the host. CUDA: make() runs per block on the device and dereferences
// the device pointers itself, so the scalars are never copied to the host (capturable); red_out
// partials go to a device workspace and a cleanup kernel writes red_out.
// Multi-pass rules are consecutive table entries (LAMB: lamb_stage1 produces sum p^2 and sum u^2,
// lamb_stage2 reads them); Python glues the passes (python/fusedopt/optim/lamb.py).
//
// ==== 3. Distributed (design only; a later issue) ========================================================
// Every norm the rules need is a *sum* of per-element terms (sum of squares; max for the inf norm),
// so sharded params (DTensor / FSDP2: each rank holds a slice of each tensor) need only one
// collective between the reduction and the element-wise pass:
//   1. each rank runs multi_tensor_sumsq over its local shards -> per_tensor (fp32 [n]) and total;
//   2. all_reduce(SUM) of the concatenated [per_tensor..., total] over the shard group (MAX for
//      the inf norm); replicated params (DDP) are not reduced (or their sums divided by the world);
//   3. the element-wise pass reads the all-reduced buffers through global_in / tensor_in exactly as
//      above: the kernels never know they were sharded.
// For stage-1 outputs (LAMB's sum u^2) the same all-reduce goes between stage 1 and stage 2.
// Ranks agree bit for bit if the collective is deterministic (NCCL ring all-reduce of fp32 is, for
// a fixed world size and algorithm); the per-rank partials are already deterministic. To keep the
// all-reduce in fp64 a wrapper can ask for the fp64 per-tensor sums (see ReduceArgs::per_tensor64).
// Row/col sums of a row- or column-sharded matrix are likewise partial sums to all-reduce over the
// sharded dimension's group (rows sharded: cols sums all-reduced, rows sums already complete).
#pragma once
#include <cmath>

#include "config.h"

namespace fusedopt {

// The reduction ops, once for both backends: X(name), in RedOp order.
#define FO_RED_OPS(X) X(SumSq) X(SumAbs) X(SumPow) X(MaxAbs) X(MinAbs) X(CountNz)

enum class RedOp : int8_t {
#define FO_RED_ENUM(name) name,
  FO_RED_OPS(FO_RED_ENUM)
#undef FO_RED_ENUM
};
constexpr int kNumRedOps = 0
#define FO_RED_COUNT(name) +1
    FO_RED_OPS(FO_RED_COUNT)
#undef FO_RED_COUNT
    ;

// Per op: the identity, the element map f(x) (x in fp64; p the exponent of SumPow) and the combine of
// two partial results. Both engines fold with these and nothing else.
template <RedOp Op>
struct RedTraits;
template <>
struct RedTraits<RedOp::SumSq> {
  FO_HD static double init() { return 0.0; }
  FO_HD static double map(double x, double) { return x * x; }
  FO_HD static double combine(double a, double b) { return a + b; }
};
template <>
struct RedTraits<RedOp::SumAbs> {
  FO_HD static double init() { return 0.0; }
  FO_HD static double map(double x, double) { return std::fabs(x); }
  FO_HD static double combine(double a, double b) { return a + b; }
};
template <>
struct RedTraits<RedOp::SumPow> {
  FO_HD static double init() { return 0.0; }
  FO_HD static double map(double x, double p) { return std::pow(std::fabs(x), p); }
  FO_HD static double combine(double a, double b) { return a + b; }
};
template <>
struct RedTraits<RedOp::MaxAbs> {
  FO_HD static double init() { return 0.0; }
  FO_HD static double map(double x, double) { return std::fabs(x); }
  // NaN wins: once a is NaN it stays (b > NaN is false), and a NaN b is taken
  FO_HD static double combine(double a, double b) { return (b > a || b != b) ? b : a; }
};
template <>
struct RedTraits<RedOp::MinAbs> {
  FO_HD static double init() { return __builtin_huge_val(); }  // +inf
  FO_HD static double map(double x, double) { return std::fabs(x); }
  FO_HD static double combine(double a, double b) { return (b < a || b != b) ? b : a; }
};
template <>
struct RedTraits<RedOp::CountNz> {
  FO_HD static double init() { return 0.0; }
  FO_HD static double map(double x, double) { return x != 0.0 ? 1.0 : 0.0; }  // NaN counts, as torch
  FO_HD static double combine(double a, double b) { return a + b; }
};

// The one switch over the ops: calls f.template operator()<Op>() for the op chosen at run time
// (a template lambda: [&]<RedOp Op>() { ... }).
template <class F>
void with_red_op(RedOp op, const F& f) {
  switch (op) {
#define FO_RED_CASE(name) \
  case RedOp::name: return f.template operator()<RedOp::name>();
    FO_RED_OPS(FO_RED_CASE)
#undef FO_RED_CASE
  }
}

// p-norms from reduced values (torch.linalg.vector_norm): the root of SumSq / SumPow, the rest as is.
template <RedOp Op>
FO_HD double red_norm(double r, double p) {
  if constexpr (Op == RedOp::SumSq) return std::sqrt(r);
  else if constexpr (Op == RedOp::SumPow) return std::pow(r, 1.0 / p);
  else return r;
}

// fp64 lanes of one CPU piece (see "Determinism").
constexpr int kLanes = 32;  // 4 AVX-512 fp64 accumulators: enough independent adds to hide their latency

// Rows per row/col piece of a matrix with C columns: about kChunk elements, at least 64 rows (bounds
// the fp64 column-partials workspace to numel / 64 values).
constexpr int64_t row_block(int64_t cols) {
  const int64_t r = cols > 0 ? kChunk / cols : kChunk;
  return r < 64 ? 64 : r;
}

// A multi-tensor reduction: tensors of one device and one dtype.
struct ReduceArgs {
  const void* const* data;   // data[t]: first element of tensor t (dense: any order of elements)
  const int64_t* numel;      // numel[t]
  int64_t ntensors;
  Dt dt;                     // F32, F64, F16 or BF16
  RedOp op;
  double p;                  // exponent of SumPow (and of the norm when `norm`)
  bool norm;                 // outputs are norms (see above), else the raw reduced values
  const float* grad_scale;   // divide each element by *grad_scale first; null: no scaling
  float* per_tensor;         // out: [ntensors] (null: not written)
  float* total;              // out: [1] (null: not written)
  double* per_tensor64;      // optional out: the same values in fp64 (fp64 inputs, or fp64 all-reduces)
  double* total64;           // optional out: the total in fp64
  double* workspace;         // CUDA: >= reduce_workspace(...) doubles of device memory; CPU: unused
  int nthreads;              // CPU: OpenMP threads (results do not depend on it)
  void* stream;              // CUDA: cudaStream_t
};

// An engine's multi-tensor reduce: f.template operator()<Op, kScaled>() for the call's op and whether it
// unscales by *grad_scale ([&]<RedOp Op, bool kScaled>() { ... }).
template <class F>
void with_red_op_scaled(const ReduceArgs& a, const F& f) {
  with_red_op(a.op, [&]<RedOp Op>() {
    if (a.grad_scale) f.template operator()<Op, true>();
    else f.template operator()<Op, false>();
  });
}

// Pieces (chunks) of a tensor with n elements.
constexpr int64_t num_chunks(int64_t n) { return (n + kChunk - 1) / kChunk; }

// Row/col sums of one tensor viewed as [batch, rows, cols] (contiguous).
struct RowColArgs {
  const void* data;
  int64_t batch, rows, cols;
  Dt dt;
  bool square;               // u = x^2 + add, else u = x + add
  bool mean;                 // divide row sums by cols, col sums by rows
  double add;
  float* row_out;            // [batch * rows]
  float* col_out;            // [batch * cols]
  double* workspace;         // >= rowcol_workspace(...) doubles (CPU: host memory, CUDA: device)
  int nthreads;
  void* stream;
};

constexpr int64_t rowcol_pieces(int64_t batch, int64_t rows, int64_t cols) {
  return batch * ((rows + row_block(cols) - 1) / row_block(cols));
}
// fp64 column partials: one row of `cols` values per piece.
constexpr int64_t rowcol_workspace(int64_t batch, int64_t rows, int64_t cols) {
  return rowcol_pieces(batch, rows, cols) * cols;
}

// What a rule with kGlobalIn / kRedIn sees when it builds its ctx (see section 2).
struct RedIn {
  const float* global;  // Launch::global_in, or null
  const float* tensor;  // this tensor's TensorPtrs::red_in, or null
};

template <class Rule>
concept HasGlobalIn = requires { Rule::kGlobalIn; };
template <class Rule>
concept HasRedIn = requires { Rule::kRedIn; };
template <class Rule>
concept ReadsReduced = HasGlobalIn<Rule> || HasRedIn<Rule>;
template <class Rule>
concept HasRedOut = requires { Rule::kRedOut; };
template <class Rule>
concept NoStepBump = requires { Rule::kNoStepBump; };

template <class Rule>
concept HasGradFactor = requires(const double* h, const RedIn& r) { Rule::grad_factor(h, 0, r); };

template <class Rule>
FO_HD float grad_factor_of(const double* h, int rflags, const RedIn& r) {
  if constexpr (HasGradFactor<Rule>) return Rule::grad_factor(h, rflags, r);
  else return 1.0f;
}

template <class Rule>
constexpr int global_in_count() {
  if constexpr (HasGlobalIn<Rule>) return Rule::kGlobalIn; else return 0;
}
template <class Rule>
constexpr int red_in_count() {
  if constexpr (HasRedIn<Rule>) return Rule::kRedIn; else return 0;
}
template <class Rule>
constexpr int red_out_count() {
  if constexpr (HasRedOut<Rule>) return Rule::kRedOut; else return 0;
}

}  // namespace fusedopt

namespace fusedopt {

// In-place clip of a list: x *= c with c = min(max_norm / (*total + eps), 1) computed in fp32 (NaN
// stays NaN), the element in fp32 (fp64 for fp64 data) and rounded back. torch.nn.utils'
// _clip_grads_with_norm_ arithmetic. CUDA reads *total on the device.
struct ClipArgs {
  void* const* data;
  const int64_t* numel;
  int64_t ntensors;
  Dt dt;
  const float* total;        // CPU: host pointer; CUDA: device pointer
  float max_norm, eps;
  int nthreads;
  void* stream;
};

FO_HD float clip_coef(float total, float max_norm, float eps) {
  const float c = max_norm / (total + eps);
  return c > 1.0f ? 1.0f : c;  // a NaN c stays NaN (torch.clamp(max=1) keeps NaN)
}

}  // namespace fusedopt
