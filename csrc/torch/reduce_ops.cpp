// torch glue of the reduction engine (core/reduce.h): schemas, checks naming the tensor, and the
// CPU / CUDA kernels of
//   fusedopt::multi_tensor_sumsq(Tensor[] tensors, *, Tensor? grad_scale=None, int threads=0)
//       -> (Tensor per_tensor, Tensor total)        fp32 [n] sums of squares and their total
//       (fp64 outputs for fp64 inputs)
//   fusedopt::multi_tensor_norm(Tensor[] tensors, float ord=2.0, *, Tensor? grad_scale=None,
//       int threads=0) -> (Tensor per_tensor, Tensor total)   torch.linalg.vector_norm semantics
//   fusedopt::row_col_sums(Tensor[] tensors, *, float add=0.0, bool square=True, bool mean=False,
//       int threads=0) -> (Tensor[] rows, Tensor[] cols)      over the last two dims of each tensor
//   fusedopt::multi_tensor_clip_(Tensor(a!)[] tensors, Tensor total_norm, float max_norm,
//       float eps=1e-6) -> ()                       x *= min(max_norm / (total_norm + eps), 1)
// `threads` = 0: torch's intra-op thread count; results never depend on it (bitwise).
// Outputs live on the inputs' device; nothing is copied to the host on CUDA.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <vector>

#include "../core/reduce.h"
#include "../cpu/api.h"
#ifdef FUSEDOPT_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "../cuda/api.h"
#endif

namespace fusedopt {
namespace {

Dt red_dt(const char* op, const at::Tensor& t, size_t i) {
  switch (t.scalar_type()) {
    case at::kFloat: return Dt::F32;
    case at::kDouble: return Dt::F64;
    case at::kHalf: return Dt::F16;
    case at::kBFloat16: return Dt::BF16;
    default:
      TORCH_CHECK(false, "fusedopt.", op, ": tensors[", i, "] has unsupported dtype ", t.scalar_type(),
                  " (supported: float32, float64, float16, bfloat16)");
  }
}

// Common checks: one device, one dtype, dense strided real tensors. Returns the dtype.
Dt check_list(const char* op, const std::vector<at::Tensor>& ts, bool need_dense = true) {
  const at::Tensor& t0 = ts[0];
  for (size_t i = 0; i < ts.size(); ++i) {
    const at::Tensor& t = ts[i];
    TORCH_CHECK(t.layout() == at::kStrided, "fusedopt.", op, ": tensors[", i,
                "] is sparse (or not strided); pass dense tensors");
    TORCH_CHECK(!t.is_complex(), "fusedopt.", op, ": tensors[", i,
                "] is complex; pass torch.view_as_real(tensor) instead");
    TORCH_CHECK(t.device() == t0.device(), "fusedopt.", op, ": tensors[", i, "] is on ", t.device(),
                " but tensors[0] is on ", t0.device(), "; one call takes tensors of one device (group them)");
    TORCH_CHECK(t.scalar_type() == t0.scalar_type(), "fusedopt.", op, ": tensors[", i, "] has dtype ",
                t.scalar_type(), " but tensors[0] has ", t0.scalar_type(), "; one call takes one dtype (group them)");
    red_dt(op, t, i);
    TORCH_CHECK(!need_dense || t.numel() == 0 || t.is_non_overlapping_and_dense(), "fusedopt.", op, ": tensors[",
                i, "] is a non-dense view (strides ", t.strides(), "); pass a dense tensor");
  }
  TORCH_CHECK(!(t0.scalar_type() == at::kDouble && !t0.is_cpu()), "fusedopt.", op,
              ": float64 tensors are supported on the CPU only");
  return red_dt(op, t0, 0);
}

void check_scale(const char* op, const std::optional<at::Tensor>& s, const at::Tensor& t0) {
  if (!s) return;
  TORCH_CHECK(s->numel() == 1 && s->scalar_type() == at::kFloat, "fusedopt.", op,
              ": grad_scale must be a one-element float32 tensor, got ", s->scalar_type(), " ", s->sizes());
  TORCH_CHECK(s->device() == t0.device(), "fusedopt.", op, ": grad_scale is on ", s->device(),
              " but the tensors are on ", t0.device());
}

int threads_of(int64_t threads) { return threads > 0 ? int(threads) : at::get_num_threads(); }

std::tuple<at::Tensor, at::Tensor> run_reduce(const char* op, const std::vector<at::Tensor>& ts, RedOp rop,
                                              double p, bool norm, const std::optional<at::Tensor>& grad_scale,
                                              int64_t threads) {
  if (ts.empty()) {
    auto o = at::TensorOptions().dtype(at::kFloat);
    return {at::empty({0}, o), at::zeros({}, o)};
  }
  const Dt dt = check_list(op, ts);
  const at::Tensor& t0 = ts[0];
  check_scale(op, grad_scale, t0);
  const int64_t n = int64_t(ts.size());
  // fp32 outputs; fp64 inputs (CPU only) get fp64 outputs
  const bool f64 = dt == Dt::F64;
  auto fo = t0.options().dtype(f64 ? at::kDouble : at::kFloat);
  at::Tensor per = at::empty({n}, fo), total = at::empty({}, fo);
  std::vector<const void*> data(ts.size());
  std::vector<int64_t> numel(ts.size());
  int64_t nchunks = 0;
  for (size_t i = 0; i < ts.size(); ++i) {
    data[i] = ts[i].const_data_ptr();
    numel[i] = ts[i].numel();
    nchunks += num_chunks(numel[i]);
  }
  ReduceArgs a{};
  a.data = data.data();
  a.numel = numel.data();
  a.ntensors = n;
  a.dt = dt;
  a.op = rop;
  a.p = p;
  a.norm = norm;
  if (f64) {
    a.per_tensor64 = per.mutable_data_ptr<double>();
    a.total64 = total.mutable_data_ptr<double>();
  } else {
    a.per_tensor = per.mutable_data_ptr<float>();
    a.total = total.mutable_data_ptr<float>();
  }
  a.nthreads = threads_of(threads);
  if (t0.is_cpu()) {
    float scale_v = 0.f;
    if (grad_scale) {
      scale_v = grad_scale->item<float>();
      a.grad_scale = &scale_v;
    }
    cpu::reduce_kernel(cpu::active_isa())(a);
    return {per, total};
  }
#ifdef FUSEDOPT_WITH_CUDA
  TORCH_CHECK(t0.is_cuda(), "fusedopt.", op, ": unsupported device ", t0.device());
  c10::cuda::CUDAGuard guard(t0.device());
  at::Tensor ws = at::empty({cuda::reduce_workspace(nchunks, n)}, t0.options().dtype(at::kDouble));
  a.workspace = ws.mutable_data_ptr<double>();
  if (grad_scale) a.grad_scale = grad_scale->const_data_ptr<float>();
  a.stream = c10::cuda::getCurrentCUDAStream(t0.device().index()).stream();
  cuda::reduce(a);
  return {per, total};
#else
  (void)nchunks;
  TORCH_CHECK(false, "fusedopt.", op, ": tensors are on ", t0.device(), " but this build has the CPU engine only");
#endif
}

std::tuple<at::Tensor, at::Tensor> multi_tensor_sumsq(at::TensorList tensors, const std::optional<at::Tensor>& grad_scale,
                                                      int64_t threads) {
  return run_reduce("multi_tensor_sumsq", tensors.vec(), RedOp::SumSq, 2.0, false, grad_scale, threads);
}

std::tuple<at::Tensor, at::Tensor> multi_tensor_norm(at::TensorList tensors, double ord,
                                                     const std::optional<at::Tensor>& grad_scale, int64_t threads) {
  TORCH_CHECK(!std::isnan(ord), "fusedopt.multi_tensor_norm: ord is NaN");
  RedOp op = RedOp::SumPow;
  if (ord == 2.0) op = RedOp::SumSq;
  else if (ord == 1.0) op = RedOp::SumAbs;
  else if (ord == 0.0) op = RedOp::CountNz;
  else if (ord == std::numeric_limits<double>::infinity()) op = RedOp::MaxAbs;
  else if (ord == -std::numeric_limits<double>::infinity()) op = RedOp::MinAbs;
  return run_reduce("multi_tensor_norm", tensors.vec(), op, ord, true, grad_scale, threads);
}

std::tuple<std::vector<at::Tensor>, std::vector<at::Tensor>> row_col_sums(at::TensorList tensors, double add,
                                                                          bool square, bool mean, int64_t threads) {
  const char* op = "row_col_sums";
  std::vector<at::Tensor> rows, cols;
  if (tensors.empty()) return {rows, cols};
  const std::vector<at::Tensor> ts = tensors.vec();
  const Dt dt = check_list(op, ts, false);
  for (size_t i = 0; i < ts.size(); ++i)
    TORCH_CHECK(ts[i].dim() >= 2, "fusedopt.", op, ": tensors[", i, "] has ", ts[i].dim(),
                " dims; row/col sums need at least 2 (the last two are rows x cols)");
  const at::Tensor& t0 = ts[0];
  auto fo = t0.options().dtype(at::kFloat);
#ifdef FUSEDOPT_WITH_CUDA
  std::optional<c10::cuda::CUDAGuard> guard;
  if (t0.is_cuda()) guard.emplace(t0.device());
#endif
  for (size_t i = 0; i < ts.size(); ++i) {
    const at::Tensor x = ts[i].contiguous();  // the logical [..., R, C] order (a copy only if needed)
    const auto sz = x.sizes();
    const int64_t R = sz[sz.size() - 2], C = sz[sz.size() - 1];
    const int64_t B = R * C == 0 ? 0 : x.numel() / (R * C);
    int64_t lead = 1;
    for (size_t d = 0; d + 2 < sz.size(); ++d) lead *= sz[d];
    std::vector<int64_t> rs(sz.begin(), sz.end() - 1);
    std::vector<int64_t> cs(sz.begin(), sz.end() - 2);
    cs.push_back(C);
    at::Tensor r = at::empty(rs, fo), c = at::empty(cs, fo);
    RowColArgs a{};
    a.data = x.const_data_ptr();
    a.batch = R * C == 0 ? lead : B;
    a.rows = R;
    a.cols = C;
    a.dt = dt;
    a.square = square;
    a.mean = mean;
    a.add = add;
    a.row_out = r.mutable_data_ptr<float>();
    a.col_out = c.mutable_data_ptr<float>();
    a.nthreads = threads_of(threads);
    const int64_t wsn = rowcol_workspace(a.batch, R, C);
    if (x.is_cpu()) {
      std::vector<double> ws(size_t(wsn > 0 ? wsn : 1));
      a.workspace = ws.data();
      cpu::rowcol_kernel(cpu::active_isa())(a);
    } else {
#ifdef FUSEDOPT_WITH_CUDA
      at::Tensor ws = at::empty({wsn > 0 ? wsn : 1}, x.options().dtype(at::kDouble));
      a.workspace = ws.mutable_data_ptr<double>();
      a.stream = c10::cuda::getCurrentCUDAStream(x.device().index()).stream();
      cuda::row_col(a);
#else
      TORCH_CHECK(false, "fusedopt.", op, ": tensors are on ", x.device(), " but this build has the CPU engine only");
#endif
    }
    rows.push_back(r);
    cols.push_back(c);
  }
  return {rows, cols};
}

void multi_tensor_clip_(at::TensorList tensors, const at::Tensor& total_norm, double max_norm, double eps) {
  const char* op = "multi_tensor_clip_";
  if (tensors.empty()) return;
  const std::vector<at::Tensor> ts = tensors.vec();
  const Dt dt = check_list(op, ts);
  const at::Tensor& t0 = ts[0];
  TORCH_CHECK(total_norm.numel() == 1 && total_norm.scalar_type() == at::kFloat, "fusedopt.", op,
              ": total_norm must be a one-element float32 tensor, got ", total_norm.scalar_type(), " ",
              total_norm.sizes());
  TORCH_CHECK(total_norm.device() == t0.device(), "fusedopt.", op, ": total_norm is on ", total_norm.device(),
              " but the tensors are on ", t0.device());
  std::vector<void*> data(ts.size());
  std::vector<int64_t> numel(ts.size());
  for (size_t i = 0; i < ts.size(); ++i) {
    data[i] = ts[i].mutable_data_ptr();
    numel[i] = ts[i].numel();
  }
  ClipArgs a{};
  a.data = data.data();
  a.numel = numel.data();
  a.ntensors = int64_t(ts.size());
  a.dt = dt;
  a.max_norm = float(max_norm);
  a.eps = float(eps);
  a.nthreads = at::get_num_threads();
  if (t0.is_cpu()) {
    const float tot = total_norm.item<float>();
    a.total = &tot;
    cpu::clip_kernel(cpu::active_isa())(a);
    return;
  }
#ifdef FUSEDOPT_WITH_CUDA
  c10::cuda::CUDAGuard guard(t0.device());
  a.total = total_norm.const_data_ptr<float>();
  a.stream = c10::cuda::getCurrentCUDAStream(t0.device().index()).stream();
  cuda::clip(a);
#else
  TORCH_CHECK(false, "fusedopt.", op, ": tensors are on ", t0.device(), " but this build has the CPU engine only");
#endif
}

}  // namespace
}  // namespace fusedopt

TORCH_LIBRARY_FRAGMENT(fusedopt, m) {
  m.def("multi_tensor_sumsq(Tensor[] tensors, *, Tensor? grad_scale=None, int threads=0) -> (Tensor, Tensor)");
  m.def("multi_tensor_norm(Tensor[] tensors, float ord=2.0, *, Tensor? grad_scale=None, int threads=0) "
        "-> (Tensor, Tensor)");
  m.def("row_col_sums(Tensor[] tensors, *, float add=0.0, bool square=True, bool mean=False, int threads=0) "
        "-> (Tensor[], Tensor[])");
  m.def("multi_tensor_clip_(Tensor(a!)[] tensors, Tensor total_norm, float max_norm, float eps=1e-6) -> ()");
}

#define FO_REDUCE_IMPLS(m)                                         \
  m.impl("multi_tensor_sumsq", &fusedopt::multi_tensor_sumsq);    \
  m.impl("multi_tensor_norm", &fusedopt::multi_tensor_norm);      \
  m.impl("row_col_sums", &fusedopt::row_col_sums);                \
  m.impl("multi_tensor_clip_", &fusedopt::multi_tensor_clip_);

TORCH_LIBRARY_IMPL(fusedopt, CPU, m) { FO_REDUCE_IMPLS(m) }
// sparse inputs reach the same kernels, whose checks name the tensor
TORCH_LIBRARY_IMPL(fusedopt, SparseCPU, m) { FO_REDUCE_IMPLS(m) }
#ifdef FUSEDOPT_WITH_CUDA
TORCH_LIBRARY_IMPL(fusedopt, CUDA, m) { FO_REDUCE_IMPLS(m) }
TORCH_LIBRARY_IMPL(fusedopt, SparseCUDA, m) { FO_REDUCE_IMPLS(m) }
#endif
