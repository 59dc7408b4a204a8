// torch glue of Adafactor's fused step (core/adafactor.h):
//   fusedopt::adafactor_(Tensor(a!)[] params, Tensor(b!)[] grads, Tensor(c!)[] row_or_var,
//       Tensor(d!)[] col, Tensor(e!)[] exp_avg, Tensor(f!)[] steps, Tensor(g!)[] rms, *,
//       float[] hyper, int flags, Tensor? found_inf=None, int threads=0, Tensor? grad_scale=None) -> ()
// hyper = [lr, eps1, eps2, clip_threshold, decay_rate, beta1, weight_decay]; flags: kAf* bits.
// Per tensor i: factored iff params[i].dim() >= 2, then row_or_var[i] is R (shape[:-1]) and col[i]
// is C (shape[:-2] + shape[-1:]); else row_or_var[i] is V (param-shaped) and col[i] is ignored
// (pass any tensor, e.g. an empty one). exp_avg is empty unless kAfBeta1. steps and rms are
// float32 scalars (steps bumped, rms written: RMS(p) before the update). grad_scale (AMP): grads are
// divided by it in place first (written back unscaled; not on a skipped step).
// One device and one param dtype per call; states float32 (float64 for float64 params).
// CPU: float32, float64, float16, bfloat16 params. CUDA: float32, float16, bfloat16 params, all
// passes on the device (found_inf read there, no host sync; see csrc/cuda/adafactor.cu).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <vector>

#include "../core/adafactor.h"
#include "../cpu/api.h"

#ifdef FUSEDOPT_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "../cuda/api.h"
#endif

namespace fusedopt {
namespace {

Dt af_dt(const at::Tensor& t, size_t i) {
  switch (t.scalar_type()) {
    case at::kFloat: return Dt::F32;
    case at::kDouble: return Dt::F64;
    case at::kHalf: return Dt::F16;
    case at::kBFloat16: return Dt::BF16;
    default:
      TORCH_CHECK(false, "fusedopt.adafactor_: params[", i, "] has unsupported dtype ", t.scalar_type(),
                  " (supported: float32, float64, float16, bfloat16)");
  }
}

void check_state(const char* list, size_t i, const at::Tensor& s, const at::Tensor& p, at::ScalarType sdt,
                 at::IntArrayRef shape) {
  TORCH_CHECK(s.device() == p.device(), "fusedopt.adafactor_: ", list, "[", i, "] is on ", s.device(),
              " but params[", i, "] is on ", p.device());
  TORCH_CHECK(s.scalar_type() == sdt, "fusedopt.adafactor_: ", list, "[", i, "] has dtype ", s.scalar_type(),
              ", expected ", sdt);
  TORCH_CHECK(s.sizes() == shape, "fusedopt.adafactor_: ", list, "[", i, "] has shape ", s.sizes(),
              ", expected ", shape);
  TORCH_CHECK(s.is_contiguous(), "fusedopt.adafactor_: ", list, "[", i, "] is not contiguous");
}

void adafactor_(at::TensorList params, at::TensorList grads, at::TensorList row_or_var, at::TensorList col,
                at::TensorList exp_avg, at::TensorList steps, at::TensorList rms, at::ArrayRef<double> hyper,
                int64_t flags, const std::optional<at::Tensor>& found_inf, int64_t threads,
                const std::optional<at::Tensor>& grad_scale) {
  const size_t n = params.size();
  if (n == 0) return;
  const bool beta1 = (flags & kAfBeta1) && !(flags & kAfTorch);
  TORCH_CHECK(grads.size() == n && row_or_var.size() == n && col.size() == n && steps.size() == n &&
                  rms.size() == n && exp_avg.size() == (beta1 ? n : 0),
              "fusedopt.adafactor_: list lengths differ (params ", n, ", grads ", grads.size(), ", row_or_var ",
              row_or_var.size(), ", col ", col.size(), ", exp_avg ", exp_avg.size(), ", steps ", steps.size(),
              ", rms ", rms.size(), ")");
  TORCH_CHECK(hyper.size() == 7, "fusedopt.adafactor_: hyper needs 7 values, got ", hyper.size());
  const at::Tensor& p0 = params[0];
  const Dt dt = af_dt(p0, 0);
  const at::ScalarType sdt = p0.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  std::vector<AfTensor> ts(n);
  for (size_t i = 0; i < n; ++i) {
    const at::Tensor& p = params[i];
    const at::Tensor& g = grads[i];
    TORCH_CHECK(p.layout() == at::kStrided && g.layout() == at::kStrided, "fusedopt.adafactor_: params[", i,
                "] or its grad is sparse; Adafactor takes dense gradients");
    TORCH_CHECK(!p.is_complex() && !g.is_complex(), "fusedopt.adafactor_: params[", i, "] is complex");
    TORCH_CHECK(p.scalar_type() == p0.scalar_type() && g.scalar_type() == p0.scalar_type(),
                "fusedopt.adafactor_: params[", i, "] / grads[", i, "] have dtypes ", p.scalar_type(), " / ",
                g.scalar_type(), " but params[0] has ", p0.scalar_type(), "; one call takes one dtype");
    TORCH_CHECK(p.device() == p0.device() && g.device() == p0.device(), "fusedopt.adafactor_: params[", i,
                "] / grads[", i, "] are not on ", p0.device());
    TORCH_CHECK(g.sizes() == p.sizes(), "fusedopt.adafactor_: grads[", i, "] has shape ", g.sizes(),
                " but params[", i, "] has ", p.sizes());
    TORCH_CHECK(p.is_contiguous() && g.is_contiguous(), "fusedopt.adafactor_: params[", i,
                "] and its grad must be contiguous (the last two dims are rows x cols)");
    AfTensor& a = ts[i];
    a.param = p.data_ptr();
    a.grad = g.data_ptr();
    a.numel = p.numel();
    a.factored = p.dim() >= 2;
    const auto sz = p.sizes();
    if (a.factored) {
      a.rows = sz[sz.size() - 2];
      a.cols = sz[sz.size() - 1];
      int64_t lead = 1;
      for (size_t d = 0; d + 2 < sz.size(); ++d) lead *= sz[d];
      a.batch = lead;
      std::vector<int64_t> rs(sz.begin(), sz.end() - 1), cs(sz.begin(), sz.end() - 2);
      cs.push_back(a.cols);
      check_state("row_or_var", i, row_or_var[i], p, sdt, rs);
      check_state("col", i, col[i], p, sdt, cs);
      a.col = col[i].data_ptr();
    } else {
      a.batch = 1;
      a.rows = 1;
      a.cols = a.numel;
      check_state("row_or_var", i, row_or_var[i], p, sdt, sz);
      a.col = nullptr;
    }
    a.row_or_var = row_or_var[i].data_ptr();
    if (beta1) {
      check_state("exp_avg", i, exp_avg[i], p, sdt, sz);
      a.exp_avg = exp_avg[i].data_ptr();
    } else {
      a.exp_avg = nullptr;
    }
    TORCH_CHECK(steps[i].numel() == 1 && steps[i].scalar_type() == at::kFloat, "fusedopt.adafactor_: steps[", i,
                "] must be a one-element float32 tensor");
    TORCH_CHECK(rms[i].numel() == 1 && rms[i].scalar_type() == at::kFloat, "fusedopt.adafactor_: rms[", i,
                "] must be a one-element float32 tensor");
    TORCH_CHECK(steps[i].device() == p.device() && rms[i].device() == p.device(), "fusedopt.adafactor_: steps[", i,
                "] / rms[", i, "] must be on ", p.device());
    a.step = steps[i].data_ptr<float>();
    a.rms = rms[i].data_ptr<float>();
  }
  AfArgs a{};
  a.tensors = ts.data();
  a.ntensors = int64_t(n);
  a.dt = dt;
  a.lr = hyper[0];
  a.eps1 = hyper[1];
  a.eps2 = hyper[2];
  a.clip = hyper[3];
  a.decay = hyper[4];
  a.beta1 = hyper[5];
  a.wd = hyper[6];
  a.flags = int(flags);
  a.nthreads = threads > 0 ? int(threads) : at::get_num_threads();
  for (const auto* x : {&found_inf, &grad_scale}) {
    TORCH_CHECK(!x->has_value() || ((*x)->numel() == 1 && (*x)->scalar_type() == at::kFloat &&
                                    (*x)->device() == p0.device()),
                "fusedopt.adafactor_: ", x == &found_inf ? "found_inf" : "grad_scale",
                " must be a one-element float32 tensor on the params' device (", p0.device(), ")");
  }
  a.found_inf = found_inf.has_value() ? found_inf->data_ptr<float>() : nullptr;
  a.grad_scale = grad_scale.has_value() ? grad_scale->data_ptr<float>() : nullptr;
  if (p0.is_cpu()) {
    cpu::adafactor_kernel(cpu::active_isa())(a);
  } else if (p0.is_cuda()) {
#ifdef FUSEDOPT_WITH_CUDA
    TORCH_CHECK(dt != Dt::F64, "fusedopt.adafactor_: params[0] is float64 on ", p0.device(),
                "; the CUDA kernels take float32, float16 and bfloat16 params (float64 runs on the CPU)");
    c10::cuda::CUDAGuard guard(p0.device());
    at::Tensor ws = at::empty({cuda::adafactor_workspace(a)}, p0.options().dtype(at::kDouble));
    cuda::adafactor(a, ws.mutable_data_ptr<double>(), c10::cuda::getCurrentCUDAStream(p0.device().index()).stream());
#else
    TORCH_CHECK(false, "fusedopt.adafactor_: params are on ", p0.device(), " but this build has no CUDA kernels");
#endif
  } else {
    TORCH_CHECK(false, "fusedopt.adafactor_: params are on ", p0.device(), "; the fused Adafactor step runs on the CPU and CUDA");
  }
}

}  // namespace
}  // namespace fusedopt

TORCH_LIBRARY_FRAGMENT(fusedopt, m) {
  m.def(
      "adafactor_(Tensor(a!)[] params, Tensor(b!)[] grads, Tensor(c!)[] row_or_var, Tensor(d!)[] col, "
      "Tensor(e!)[] exp_avg, Tensor(f!)[] steps, Tensor(g!)[] rms, *, float[] hyper, int flags, "
      "Tensor? found_inf=None, int threads=0, Tensor? grad_scale=None) -> ()");
}
TORCH_LIBRARY_IMPL(fusedopt, CPU, m) { m.impl("adafactor_", &fusedopt::adafactor_); }
#ifdef FUSEDOPT_WITH_CUDA
TORCH_LIBRARY_IMPL(fusedopt, CUDA, m) { m.impl("adafactor_", &fusedopt::adafactor_); }
#endif
