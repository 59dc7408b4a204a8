// The only torch-facing code of the engines: op schemas (TORCH_LIBRARY), argument
// checks, and the CPU / CUDA kernels that unpack tensor lists into a Launch.
//
// Every per-element rule of core/rule_table.h gets one mutable list op:
//   fusedopt::<rule>_(Tensor(a!)[] params, Tensor(b!)[] grads, Tensor(c!)[] <state 0>, ...,
//                     Tensor(x!)[] state_steps, Tensor(y!)[] param_comps, *, float[] hyper,
//                     float lr, Tensor? lr_tensor=None, Tensor? grad_scale=None,
//                     Tensor? found_inf=None, int flags=0) -> ()
// A rule that reads no grad (core/traits.h: Lookahead's sync, iterate averaging) has no `grads`
// list and refuses grad_scale.
// One boxed kernel serves all rules of a backend: it reads the rule from the op name.
#include <ATen/core/Tensor.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <torch/custom_class.h>
#include <torch/library.h>

#include <cstring>
#include <sstream>
#include <string>
#include <vector>

#include "../core/aux.h"
#include "../core/rule_table.h"
#include "../core/traits.h"
#include "rule_specs.h"
#include "../cpu/api.h"
#ifdef FUSEDOPT_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "../cuda/api.h"
#endif

namespace fusedopt {
namespace {

struct RuleInfo {
  const char* op;
  const char* states;                  // the rule's kStates (core/rule_facts.h)
  int num_hyper;
  int num_variants;
  int (*num_states)(int variant);
  unsigned (*slot_mask)(int variant);  // which named state lists a variant uses (core/rule_facts.h)
  bool reads_grad;                     // false: no grads list (core/traits.h)
  int global_in, red_in, red_out;      // reduced values the rule reads / produces (core/reduce.h)
};

// The facts of every rule are checked against its code at compile time (core/rule_facts.h).
#define FO_RULE_CHECK(op, Rule)                                                                           \
  static_assert(facts::consistent<rules::Rule>(), #op ": a variant uses more states than kStates names");   \
  static_assert((facts::count_states(rules::Rule::kStates, true) == 1) == HasAux<rules::Rule>,              \
                #op ": a '@' scalar state in kStates and kHasAux go together (core/aux.h)");
FO_ELEMENTWISE_RULES(FO_RULE_CHECK)
#undef FO_RULE_CHECK

const RuleInfo kRules[] = {
#define FO_RULE_INFO(op, Rule)                                                                      \
  {#op, rules::Rule::kStates, facts::num_hyper<rules::Rule>(), rules::Rule::kNumVariants,          \
   [](int v) { return rules::Rule::num_states(v); },                                                \
   [](int v) -> unsigned { return facts::slot_mask<rules::Rule>(v); }, reads_grad<rules::Rule>(),   \
   global_in_count<rules::Rule>(), red_in_count<rules::Rule>(), red_out_count<rules::Rule>()},
    FO_ELEMENTWISE_RULES(FO_RULE_INFO)
#undef FO_RULE_INFO
};
static_assert(sizeof(kRules) / sizeof(kRules[0]) == kNumRules, "one RuleInfo per rule, in table order");

// What the glue needs of a rule's state string, parsed once (not per call).
struct Parsed {
  std::vector<std::string> names;  // element-state and '@' names in table order, marks and initial values stripped
  int num_element = 0, num_scalar = 0;
  unsigned unsigned_lists = 0;     // bit k: element-state list k is non-negative (unsigned 8-bit map)
};

const Parsed& parsed(const RuleInfo& r) {
  static const std::vector<Parsed> table = [] {
    std::vector<Parsed> t;
    for (const RuleInfo& ri : kRules) {
      Parsed p;
      for (const StateDecl& d : parse_states(ri.states)) {
        p.names.push_back(d.name);
        if (d.scalar) {
          ++p.num_scalar;
          continue;
        }
        if (!d.is_signed) p.unsigned_lists |= 1u << p.num_element;
        ++p.num_element;
      }
      t.push_back(std::move(p));
    }
    return t;
  }();
  return table[size_t(&r - kRules)];
}

std::string schema_of(const RuleInfo& r) {
  std::ostringstream s;
  const char* alias = "cdefghijklmnop";
  s << r.op << "_(Tensor(a!)[] params";
  if (r.reads_grad) s << ", Tensor(b!)[] grads";
  int k = 0;
  // element states first, then per-tensor scalar states (kStates lists them in that order)
  for (const auto& n : parsed(r).names) s << ", Tensor(" << alias[k++] << "!)[] " << n << "s";
  s << ", Tensor(" << alias[k] << "!)[] state_steps, Tensor(" << alias[k + 1] << "!)[] param_comps"
    << ", *, float[] hyper, float lr, Tensor? lr_tensor=None, Tensor? grad_scale=None,"
    << " Tensor? found_inf=None, int flags=0, Tensor(" << alias[k + 2]
    << "!)[]? state_absmax=None, int block_size=256";
  // rules of the reduction engine (core/reduce.h) take their reduced values as extra arguments
  if (r.global_in) s << ", Tensor? global_in=None";
  if (r.red_in) s << ", Tensor? tensor_in=None";
  if (r.red_out) s << ", Tensor(z!)? tensor_out=None";
  s << ") -> ()";
  return s.str();
}

Dt dt_of(at::ScalarType s) {
  switch (s) {
    case at::kFloat: return Dt::F32;
    case at::kDouble: return Dt::F64;
    case at::kHalf: return Dt::F16;
    case at::kBFloat16: return Dt::BF16;
    case at::kByte: return Dt::U8;
    default: return Dt::F32;
  }
}

// Arguments of one call, unpacked from the stack.
struct Args {
  std::vector<at::Tensor> params, grads, steps, comps, aux;
  std::vector<std::vector<at::Tensor>> states;
  std::vector<double> hyper;
  double lr;
  std::optional<at::Tensor> lr_tensor, grad_scale, found_inf;
  int64_t flags;
  std::vector<at::Tensor> absmax;  // 8-bit states: per-block absmax, list-major (see check_and_pack)
  int64_t block_size;
  std::optional<at::Tensor> global_in, tensor_in, tensor_out;
};

std::optional<at::Tensor> opt_tensor(const c10::IValue& v) {
  if (v.isNone()) return std::nullopt;
  return v.toTensor();
}

int count_states(const RuleInfo& r, bool scalar) { return scalar ? parsed(r).num_scalar : parsed(r).num_element; }

Args unpack(const RuleInfo& r, torch::jit::Stack* stack) {
  const int ns = count_states(r, false);
  const int na = count_states(r, true);
  TORCH_CHECK(na <= 1, "fusedopt: at most one per-tensor scalar state per rule");
  const size_t nred = size_t((r.global_in ? 1 : 0) + (r.red_in ? 1 : 0) + (r.red_out ? 1 : 0));
  const size_t nargs = size_t((r.reads_grad ? 2 : 1) + ns + na + 2 + 6 + 2) + nred;
  auto it = stack->end() - nargs;
  Args a;
  a.params = (it++)->toTensorVector();
  if (r.reads_grad) a.grads = (it++)->toTensorVector();
  for (int k = 0; k < ns; ++k) a.states.push_back((it++)->toTensorVector());
  if (na) a.aux = (it++)->toTensorVector();
  a.steps = (it++)->toTensorVector();
  a.comps = (it++)->toTensorVector();
  a.hyper = (it++)->toDoubleVector();
  a.lr = (it++)->toDouble();
  a.lr_tensor = opt_tensor(*it++);
  a.grad_scale = opt_tensor(*it++);
  a.found_inf = opt_tensor(*it++);
  a.flags = (it++)->toInt();
  if (!it->isNone()) a.absmax = it->toTensorVector();
  ++it;
  a.block_size = (it++)->toInt();
  if (r.global_in) a.global_in = opt_tensor(*it++);
  if (r.red_in) a.tensor_in = opt_tensor(*it++);
  if (r.red_out) a.tensor_out = opt_tensor(*it++);
  torch::jit::drop(*stack, nargs);
  return a;
}

std::string where(const char* list, size_t i) {
  std::ostringstream s;
  s << list << "[" << i << "]";
  return s.str();
}

// Checks shared by every backend; fills the Launch except device-specific scalars.
// Returns the TensorPtrs of every tensor (empty ones included: their steps still count).
std::vector<TensorPtrs> check_and_pack(const RuleInfo& rule, const Args& a, Launch& L, c10::DeviceType dev_type) {
  const char* op = rule.op;
  const size_t n = a.params.size();
  const int ns = int(a.states.size());
  TORCH_CHECK((!rule.reads_grad || a.grads.size() == n) && a.steps.size() == n, "fusedopt.", op, ": params (", n,
              "), grads (", a.grads.size(), ") and state_steps (", a.steps.size(), ") must have the same length");
  TORCH_CHECK(rule.reads_grad || !a.grad_scale, "fusedopt.", op, ": reads no gradients, so grad_scale must be None");
  const int variant = variant_of(a.flags);
  TORCH_CHECK(variant < rule.num_variants, "fusedopt.", op, ": flags select variant ", variant, " but the rule has ",
              rule.num_variants);
  const int need = rule.num_states(variant);
  const unsigned mask = rule.slot_mask(variant);
  const std::vector<std::string>& names = parsed(rule).names;
  int used = 0;
  std::vector<int> lists;  // the state lists this variant uses, packed into engine slots 0..need-1
  for (int k = 0; k < ns; ++k) {
    TORCH_CHECK(a.states[k].empty() || a.states[k].size() == n, "fusedopt.", op, ": state list ", k, " has ",
                a.states[k].size(), " tensors, params has ", n);
    if (!a.states[k].empty()) used += 1;
    if (mask & (1u << k)) lists.push_back(k);
  }
  TORCH_CHECK(n == 0 || used == need, "fusedopt.", op, ": this variant uses ", need, " state lists, got ", used,
              " non-empty ones (e.g. amsgrad needs max_exp_avg_sqs)");
  for (int k = 0; k < ns && n > 0; ++k) {
    const bool want = mask & (1u << k);
    TORCH_CHECK(want == !a.states[k].empty(), "fusedopt.", op, ": this variant ", want ? "needs" : "does not use",
                " the state list ", names[size_t(k)], "s (list ", k, ")");
  }
  TORCH_CHECK(int(a.hyper.size()) == rule.num_hyper, "fusedopt.", op, ": hyper must hold ", rule.num_hyper,
              " values, got ", a.hyper.size());
  TORCH_CHECK(a.comps.empty() || a.comps.size() == n, "fusedopt.", op, ": param_comps must be empty or match params");
  const bool has_aux = count_states(rule, true) > 0;
  TORCH_CHECK(!has_aux || a.aux.size() == n, "fusedopt.", op, ": the per-tensor scalar state list has ",
              a.aux.size(), " tensors, params has ", n);
  std::vector<TensorPtrs> out;
  if (n == 0) return out;
  const at::Tensor& p0 = a.params[0];
  const auto device = p0.device();
  TORCH_CHECK(device.type() == dev_type, "fusedopt.", op, ": internal dispatch mismatch");
  const at::ScalarType pdt = p0.scalar_type();
  TORCH_CHECK(pdt == at::kFloat || pdt == at::kHalf || pdt == at::kBFloat16 || pdt == at::kDouble,
              "fusedopt.", op, ": params[0] has unsupported dtype ", pdt,
              " (supported: float32, float16, bfloat16, and float64 on the CPU)");
  TORCH_CHECK(!(pdt == at::kDouble && dev_type == c10::DeviceType::CUDA), "fusedopt.", op,
              ": float64 params are supported on the CPU only");
  at::ScalarType sdt = at::kFloat;
  bool sdt_set = false;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const at::Tensor& p = a.params[i];
    const at::Tensor& g = rule.reads_grad ? a.grads[i] : p;  // no-grad rules: the param stands in for the checks
    TORCH_CHECK(p.layout() == at::kStrided, "fusedopt.", op, ": ", where("params", i), " is not a dense tensor");
    TORCH_CHECK(g.layout() == at::kStrided, "fusedopt.", op, ": ", where("grads", i),
                " is sparse; dense optimizers cannot take sparse gradients (see torch.optim.SparseAdam)");
    TORCH_CHECK(!p.is_complex(), "fusedopt.", op, ": ", where("params", i),
                " is complex; pass torch.view_as_real(param) (and its grad and states) instead");
    TORCH_CHECK(p.device() == device, "fusedopt.", op, ": ", where("params", i), " is on ", p.device(),
                " but params[0] is on ", device, "; one call takes tensors of one device");
    TORCH_CHECK(p.scalar_type() == pdt, "fusedopt.", op, ": ", where("params", i), " has dtype ", p.scalar_type(),
                " but params[0] has ", pdt, "; one call takes one param dtype");
    TORCH_CHECK(g.device() == device, "fusedopt.", op, ": ", where("grads", i), " is on ", g.device(),
                " but its param is on ", device);
    TORCH_CHECK(g.scalar_type() == pdt, "fusedopt.", op, ": ", where("grads", i), " has dtype ", g.scalar_type(),
                " but its param has ", pdt);
    TORCH_CHECK(g.sizes() == p.sizes(), "fusedopt.", op, ": ", where("grads", i), " has shape ", g.sizes(),
                " but its param has shape ", p.sizes());
    TORCH_CHECK(p.is_non_overlapping_and_dense(), "fusedopt.", op, ": ", where("params", i),
                " is a non-dense view (strides ", p.strides(), "); update its base tensor instead");
    TORCH_CHECK(p.numel() == 0 || g.strides() == p.strides(), "fusedopt.", op, ": ", where("grads", i),
                " has strides ", g.strides(), " but its param has ", p.strides());
    TensorPtrs t{};
    t.param = p.data_ptr();
    t.grad = rule.reads_grad ? g.data_ptr() : nullptr;
    t.numel = p.numel();
    for (int j = 0; j < used; ++j) {
      const int k = lists[size_t(j)];
      TORCH_CHECK(!a.states[k].empty(), "fusedopt.", op, ": state list ", k, " is missing");
      const at::Tensor& s = a.states[k][i];
      TORCH_CHECK(s.device() == device, "fusedopt.", op, ": state ", k, " of ", where("params", i), " is on ",
                  s.device(), " but the param is on ", device);
      TORCH_CHECK(s.sizes() == p.sizes() && (p.numel() == 0 || s.strides() == p.strides()), "fusedopt.", op,
                  ": ", names[size_t(k)], "s[", i, "]: state ", k, " of ", where("params", i), " has shape ", s.sizes(), " / strides ", s.strides(),
                  " but the param has ", p.sizes(), " / ", p.strides());
      if (!sdt_set) {
        sdt = s.scalar_type();
        sdt_set = true;
      }
      TORCH_CHECK(s.scalar_type() == sdt, "fusedopt.", op, ": ", names[size_t(k)], "s[", i, "]: state ", k, " of ",
                  where("params", i), " has dtype ", s.scalar_type(), " but other states have ", sdt);
      t.state[j] = s.data_ptr();
    }
    const at::Tensor& st = a.steps[i];
    TORCH_CHECK(st.numel() == 1 && (st.scalar_type() == at::kFloat || st.scalar_type() == at::kDouble) &&
                    st.device() == device && st.is_contiguous(),
                "fusedopt.", op, ": ", where("state_steps", i),
                " must be a one-element float32/float64 tensor on the param's device (got ", st.scalar_type(), " ",
                st.sizes(), " on ", st.device(), ")");
    TORCH_CHECK(st.scalar_type() == a.steps[0].scalar_type(), "fusedopt.", op, ": state_steps mix dtypes");
    t.step = st.data_ptr();
    if (has_aux) {
      const at::Tensor& x = a.aux[i];
      TORCH_CHECK(x.numel() == 1 && x.scalar_type() == at::kFloat && x.device() == device && x.is_contiguous(),
                  "fusedopt.", op, ": per-tensor scalar state ", i,
                  " must be a one-element float32 tensor on the param's device (got ", x.scalar_type(), " ",
                  x.sizes(), " on ", x.device(), ")");
      t.aux = x.data_ptr();
    }
    if (!a.comps.empty()) {
      const at::Tensor& c = a.comps[i];
      TORCH_CHECK(pdt == at::kBFloat16 && c.scalar_type() == at::kBFloat16 && c.device() == device &&
                      c.sizes() == p.sizes() && (p.numel() == 0 || c.strides() == p.strides()),
                  "fusedopt.", op, ": ", where("param_comps", i),
                  " must be a bfloat16 tensor like its (bfloat16) param");
      t.comp = c.data_ptr();
    }
    out.push_back(t);
  }
  const bool q8 = sdt_set && sdt == at::kByte;
  // reduced values (core/reduce.h): fp32, on the params' device
  auto check_red = [&](const std::optional<at::Tensor>& x, const char* what, int64_t rows, int k) {
    TORCH_CHECK(x->scalar_type() == at::kFloat && x->device() == device && x->is_contiguous(), "fusedopt.", op,
                ": ", what, " must be a contiguous float32 tensor on ", device, " (got ", x->scalar_type(), " on ",
                x->device(), ")");
    TORCH_CHECK(rows < 0 ? x->numel() >= k : (x->numel() == rows * k), "fusedopt.", op, ": ", what, " has ",
                x->numel(), " elements, expected ", rows < 0 ? "at least " : "", rows < 0 ? k : rows * k,
                rows < 0 ? "" : " (one row of values per tensor)");
  };
  if (rule.global_in && a.global_in) {
    check_red(a.global_in, "global_in", -1, rule.global_in);
    L.global_in = a.global_in->const_data_ptr<float>();
  }
  if (rule.red_in) {
    TORCH_CHECK(a.tensor_in.has_value(), "fusedopt.", op, ": tensor_in (the reduced values of each tensor) is required");
    check_red(a.tensor_in, "tensor_in", int64_t(n), rule.red_in);
    for (size_t i = 0; i < n; ++i) out[i].red_in = a.tensor_in->const_data_ptr<float>() + int64_t(i) * rule.red_in;
  }
  if (rule.red_out) {
    TORCH_CHECK(a.tensor_out.has_value(), "fusedopt.", op, ": tensor_out (per-tensor sums this pass writes) is required");
    check_red(a.tensor_out, "tensor_out", int64_t(n), rule.red_out);
    for (size_t i = 0; i < n; ++i)
      out[i].red_out = a.tensor_out->mutable_data_ptr<float>() + int64_t(i) * rule.red_out;
  }
  if (sdt_set) {
    if (pdt == at::kDouble) {
      TORCH_CHECK(sdt == at::kDouble, "fusedopt.", op, ": float64 params need float64 states, got ", sdt);
    } else {
      TORCH_CHECK(sdt == at::kFloat || sdt == at::kBFloat16 || sdt == at::kByte, "fusedopt.", op,
                  ": states must be float32, bfloat16 or uint8 (8-bit codes), got ", sdt);
    }
  }
  TORCH_CHECK(q8 || a.absmax.empty(), "fusedopt.", op,
              ": state_absmax was given but the states are not uint8 8-bit codes");
  if (q8) {
    TORCH_CHECK(rule.reads_grad, "fusedopt.", op, ": 8-bit states are for update rules; this op keeps float states");
    const int64_t B = a.block_size;
    TORCH_CHECK(B >= kQ8Tile && B <= kQ8MaxBlock && (B & (B - 1)) == 0, "fusedopt.", op, ": block_size ", B,
                " is not supported for 8-bit states (one of 256, 512, 1024, 2048, 4096: a power-of-two multiple "
                "of the kernels' 256-element tile)");
    TORCH_CHECK(a.absmax.size() == size_t(used) * n, "fusedopt.", op, ": 8-bit states need state_absmax with ",
                used, " x ", n, " tensors (one per state list and param, list-major), got ", a.absmax.size());
    for (int j = 0; j < used; ++j) {
      const int k = lists[size_t(j)];
      for (size_t i = 0; i < n; ++i) {
        const at::Tensor& am = a.absmax[size_t(j) * n + i];
        const int64_t nb = (a.params[i].numel() + B - 1) / B;
        TORCH_CHECK(am.scalar_type() == at::kFloat && am.device() == device && am.is_contiguous() &&
                        am.numel() == nb,
                    "fusedopt.", op, ": state_absmax for ", names[size_t(k)], "s[", i,
                    "] must be a contiguous float32 tensor of ceil(numel / block_size) = ", nb,
                    " elements on the param's device, got ", am.scalar_type(), " ", am.sizes(), " on ", am.device());
        out[i].absmax[j] = am.data_ptr<float>();
      }
    }
    TORCH_CHECK(pdt != at::kDouble, "fusedopt.", op, ": 8-bit states are for float32 / float16 / bfloat16 params");
    TORCH_CHECK(a.comps.empty() && !(a.flags & kFlagStochRound), "fusedopt.", op,
                ": 8-bit states cannot be combined with stochastic rounding or Kahan-compensated params");
  }
  const float* gin = L.global_in;
  L = Launch{};
  L.global_in = gin;
  L.tensors = out.data();
  L.ntensors = int64_t(out.size());
  L.nstates = used;
  for (size_t h = 0; h < a.hyper.size(); ++h) L.hyper[h] = a.hyper[h];
  L.lr = a.lr;
  L.flags = a.flags;
  L.param_dt = dt_of(pdt);
  L.state_dt = dt_of(sdt);
  L.param_mode = !a.comps.empty() ? ParamMode::Kahan
                 : (a.flags & kFlagStochRound) ? ParamMode::StochRound
                                               : ParamMode::Plain;
  TORCH_CHECK(L.param_mode == ParamMode::Plain || pdt == at::kBFloat16, "fusedopt.", op,
              ": stochastic rounding / Kahan compensation apply to bfloat16 params only (params are ", pdt, ")");
  L.step_f64 = a.steps[0].scalar_type() == at::kDouble;
  if (q8) {
    const unsigned uns = parsed(rule).unsigned_lists;
    L.q8_block = int(a.block_size);
    for (int j = 0; j < used; ++j)
      if (!(uns & (1u << lists[size_t(j)]))) L.q8_signed_slots |= 1u << j;
  }
  return out;
}

void check_scalar(const char* op, const char* what, const at::Tensor& t, const c10::Device& device) {
  TORCH_CHECK(t.numel() == 1 && t.scalar_type() == at::kFloat, "fusedopt.", op, ": ", what,
              " must be a one-element float32 tensor, got ", t.scalar_type(), " ", t.sizes());
  TORCH_CHECK(t.device() == device, "fusedopt.", op, ": ", what, " is on ", t.device(), " but params are on ",
              device);
}

// Runs rule `rule` on the CPU over the packed L (check_and_pack), with a's per-call scalars.
void run_cpu(int rule, const Args& a, Launch& L) {
  const RuleInfo& r = kRules[rule];
  const c10::Device dev = a.params[0].device();
  float scale_v = 0.f, inf_v = 0.f;
  if (a.found_inf) {
    check_scalar(r.op, "found_inf", *a.found_inf, dev);
    inf_v = a.found_inf->item<float>();
    L.found_inf = &inf_v;
  }
  if (a.grad_scale) {
    check_scalar(r.op, "grad_scale", *a.grad_scale, dev);
    scale_v = a.grad_scale->item<float>();
    L.grad_scale = &scale_v;
  }
  if (a.lr_tensor) {
    TORCH_CHECK(a.lr_tensor->numel() == 1, "fusedopt.", r.op, ": lr_tensor must have one element");
    L.lr = a.lr_tensor->item<double>();
  }
  L.nthreads = at::get_num_threads();
  L.q8_books = cpu::q8_books();
  cpu::Kernel k = cpu::kernel_at(rule);
  TORCH_CHECK(k, "fusedopt: no CPU kernel for ", r.op);
  k(L);
}

void cpu_kernel(int rule, torch::jit::Stack* stack) {
  Args a = unpack(kRules[rule], stack);
  Launch L{};
  std::vector<TensorPtrs> ptrs = check_and_pack(kRules[rule], a, L, c10::DeviceType::CPU);
  if (!ptrs.empty()) run_cpu(rule, a, L);
}

#ifdef FUSEDOPT_WITH_CUDA
// Runs rule `rule` on CUDA over the packed L (check_and_pack), with a's per-call scalars, on the current stream.
void run_cuda(int rule, const Args& a, Launch& L) {
  const RuleInfo& r = kRules[rule];
  const c10::Device dev = a.params[0].device();
  c10::cuda::CUDAGuard guard(dev);
  at::Tensor lr_dev;
  if (a.found_inf) {
    check_scalar(r.op, "found_inf", *a.found_inf, dev);
    L.found_inf = a.found_inf->const_data_ptr<float>();
  }
  if (a.grad_scale) {
    check_scalar(r.op, "grad_scale", *a.grad_scale, dev);
    L.grad_scale = a.grad_scale->const_data_ptr<float>();
  }
  if (a.lr_tensor) {
    TORCH_CHECK(a.lr_tensor->numel() == 1, "fusedopt.", r.op, ": lr_tensor must have one element");
    if (a.lr_tensor->is_cpu()) {
      L.lr = a.lr_tensor->item<double>();  // host value: no device sync
    } else {
      TORCH_CHECK(a.lr_tensor->device() == dev, "fusedopt.", r.op, ": lr_tensor is on ", a.lr_tensor->device(),
                  " but params are on ", dev);
      lr_dev = a.lr_tensor->scalar_type() == at::kFloat ? *a.lr_tensor : a.lr_tensor->to(at::kFloat);
      L.lr_ptr = lr_dev.const_data_ptr<float>();
    }
  }
  L.stream = c10::cuda::getCurrentCUDAStream(dev.index()).stream();
  at::Tensor red_ws;
  if (r.red_out) {  // fp64 chunk partials of the per-tensor outputs (core/reduce.h)
    int64_t nchunks = 0;
    for (int64_t t = 0; t < L.ntensors; ++t) nchunks += num_chunks(L.tensors[t].numel);
    red_ws = at::empty({nchunks * r.red_out + 1}, a.params[0].options().dtype(at::kDouble));
    L.red_workspace = red_ws.mutable_data_ptr<double>();
  }
  cuda::Kernel k = cuda::kernel_at(rule);
  TORCH_CHECK(k, "fusedopt: no CUDA kernel for ", r.op);
  k(L);
}

void cuda_kernel(int rule, torch::jit::Stack* stack) {
  Args a = unpack(kRules[rule], stack);
  Launch L{};
  std::vector<TensorPtrs> ptrs = check_and_pack(kRules[rule], a, L, c10::DeviceType::CUDA);
  if (!ptrs.empty()) run_cuda(rule, a, L);
}
#endif

// The boxed kernel of one rule's op on one backend: the rule is resolved at registration (its number
// in the rule table is kept here), so a call does no name lookup.
struct RuleKernel final : c10::OperatorKernel {
  int rule;
  bool cuda;
  RuleKernel(int r, bool c) : rule(r), cuda(c) {}
  void operator()(const c10::OperatorHandle&, c10::DispatchKeySet, torch::jit::Stack* stack) {
#ifdef FUSEDOPT_WITH_CUDA
    if (cuda) return cuda_kernel(rule, stack);
#endif
    cpu_kernel(rule, stack);
  }
};

void register_rules(torch::Library& m, bool cuda) {
  for (int r = 0; r < kNumRules; ++r)
    m.impl((std::string(kRules[r].op) + "_").c_str(),
           torch::CppFunction::makeFromBoxedFunctor(std::make_unique<RuleKernel>(r, cuda)));
}

// ---- plans: a bucket's lists kept between steps --------------------------------------------------
// FusedOptimizer.step's fast path for single-pass rules: a bucket's tensor lists cross from Python once,
// into a Plan, validated then as an op call's are (check_and_pack). A step passes only the per-step
// scalars and reads each grad from its param (or takes a grad list). What a step costs on the host is
// then a grad check and a few data pointers per tensor; the plan packs again whenever a kept tensor's
// data pointer changed (a param assigned new data, states replaced), and a step in which some param has
// no grad goes through the full op path with the params that have one.
struct Plan : torch::CustomClassHolder {
  int rule = -1;
  Args a;                        // the kept lists; a.grads holds the grads of the last step
  Launch base{};                 // check_and_pack's Launch (dtypes, modes, 8-bit options)
  std::vector<TensorPtrs> ptrs;  // packed pointers; the grads are refreshed each step
  std::vector<const void*> seen; // data pointers of every kept tensor when packed
  c10::DeviceType dev_type = c10::DeviceType::CPU;

  Plan(const std::string& op, std::vector<at::Tensor> params, std::vector<at::Tensor> grads,
       std::vector<at::Tensor> states_flat, std::vector<int64_t> list_sizes, std::vector<at::Tensor> aux,
       std::vector<at::Tensor> steps, std::vector<at::Tensor> comps, std::vector<at::Tensor> absmax,
       int64_t block_size, int64_t flags) {
    rule = rule_index(op.c_str());
    TORCH_CHECK(rule >= 0, "fusedopt.Plan: no rule ", op);
    TORCH_CHECK(!kRules[rule].global_in && !kRules[rule].red_in && !kRules[rule].red_out && kRules[rule].reads_grad,
                "fusedopt.Plan: ", op, " reads or writes reduced values or reads no grad; call its op instead");
    TORCH_CHECK(!params.empty(), "fusedopt.Plan: no params");
    a.params = std::move(params);
    a.grads = std::move(grads);
    size_t o = 0;
    for (int64_t n : list_sizes) {
      TORCH_CHECK(n >= 0 && o + size_t(n) <= states_flat.size(), "fusedopt.Plan: list_sizes do not match the states");
      a.states.emplace_back(states_flat.begin() + o, states_flat.begin() + o + n);
      o += size_t(n);
    }
    a.aux = std::move(aux);
    a.steps = std::move(steps);
    a.comps = std::move(comps);
    a.absmax = std::move(absmax);
    a.block_size = block_size;
    a.flags = flags;
    a.hyper.assign(size_t(kRules[rule].num_hyper), 0.0);
    a.lr = 0.0;
    dev_type = a.params[0].device().type();
    pack();
  }

  void data_ptrs(std::vector<const void*>& out) const {
    out.clear();
    auto add = [&](const std::vector<at::Tensor>& v) {
      for (const auto& t : v) out.push_back(t.const_data_ptr());
    };
    add(a.params);
    for (const auto& l : a.states) add(l);
    add(a.aux);
    add(a.steps);
    add(a.comps);
    add(a.absmax);
  }

  void pack() {
    base = Launch{};
    ptrs = check_and_pack(kRules[rule], a, base, dev_type);
    data_ptrs(seen);
  }

  void run(Args& call, Launch& L) {
#ifdef FUSEDOPT_WITH_CUDA
    if (dev_type == c10::DeviceType::CUDA) return run_cuda(rule, call, L);
#endif
    run_cpu(rule, call, L);
  }

  void step(const std::optional<std::vector<at::Tensor>>& grads, std::vector<double> hyper, double lr,
            const std::optional<at::Tensor>& lr_tensor, const std::optional<at::Tensor>& grad_scale,
            const std::optional<at::Tensor>& found_inf, int64_t flags) {
    const char* op = kRules[rule].op;
    const size_t n = a.params.size();
    TORCH_CHECK(variant_of(flags) == variant_of(a.flags) && (flags & kFlagStochRound) == (a.flags & kFlagStochRound),
                "fusedopt.", op, ": the plan was made for other variant / rounding flags; make a new plan");
    TORCH_CHECK(int(hyper.size()) == kRules[rule].num_hyper, "fusedopt.", op, ": hyper must hold ",
                kRules[rule].num_hyper, " values, got ", hyper.size());
    TORCH_CHECK(!grads || grads->size() == n, "fusedopt.", op, ": grads has ", grads ? grads->size() : 0,
                " tensors, the plan has ", n, " params");
    a.hyper = std::move(hyper);
    a.lr = lr;
    a.flags = flags;
    a.lr_tensor = lr_tensor;
    a.grad_scale = grad_scale;
    a.found_inf = found_inf;
    bool all = true;
    for (size_t i = 0; i < n; ++i) {
      a.grads[i] = grads ? (*grads)[i] : a.params[i].grad();
      all = all && a.grads[i].defined();
    }
    if (!all) return step_some();  // params without a grad take no step: the full op path over the others
    std::vector<const void*> now;
    data_ptrs(now);
    if (now != seen) {
      pack();  // validates everything again, the grads included
    } else {
      for (size_t i = 0; i < n; ++i) {  // a grad may be a new tensor every step: check it against its param
        const at::Tensor& p = a.params[i];
        const at::Tensor& g = a.grads[i];
        TORCH_CHECK(g.scalar_type() == p.scalar_type() && g.device() == p.device() && g.sizes() == p.sizes() &&
                        (p.numel() == 0 || g.strides() == p.strides()) && g.layout() == at::kStrided,
                    "fusedopt.", op, ": ", where("grads", i), " (", g.scalar_type(), " ", g.sizes(), " strides ",
                    g.strides(), " on ", g.device(), ") does not match its param (", p.scalar_type(), " ", p.sizes(),
                    " strides ", p.strides(), " on ", p.device(), ")");
        ptrs[i].grad = g.data_ptr();
      }
    }
    Launch L = base;
    L.tensors = ptrs.data();
    L.ntensors = int64_t(ptrs.size());
    for (size_t h = 0; h < a.hyper.size(); ++h) L.hyper[h] = a.hyper[h];
    L.lr = a.lr;
    L.flags = a.flags;
    run(a, L);
  }

  // A step where some params have no grad: the op path (check_and_pack) over the params that have one.
  void step_some() {
    Args b;
    b.states.resize(a.states.size());
    for (size_t i = 0; i < a.params.size(); ++i) {
      if (!a.grads[i].defined()) continue;
      b.params.push_back(a.params[i]);
      b.grads.push_back(a.grads[i]);
      for (size_t k = 0; k < a.states.size(); ++k)
        if (!a.states[k].empty()) b.states[k].push_back(a.states[k][i]);
      if (!a.aux.empty()) b.aux.push_back(a.aux[i]);
      b.steps.push_back(a.steps[i]);
      if (!a.comps.empty()) b.comps.push_back(a.comps[i]);
    }
    if (!a.absmax.empty()) {  // list-major: one list of n per state list in use
      const size_t n = a.params.size(), used = a.absmax.size() / n;
      for (size_t j = 0; j < used; ++j)
        for (size_t i = 0; i < n; ++i)
          if (a.grads[i].defined()) b.absmax.push_back(a.absmax[j * n + i]);
    }
    if (b.params.empty()) return;
    b.hyper = a.hyper;
    b.lr = a.lr;
    b.flags = a.flags;
    b.lr_tensor = a.lr_tensor;
    b.grad_scale = a.grad_scale;
    b.found_inf = a.found_inf;
    b.block_size = a.block_size;
    Launch L{};
    std::vector<TensorPtrs> p = check_and_pack(kRules[rule], b, L, dev_type);
    if (!p.empty()) run(b, L);
  }
};

// ---- standalone block-wise 8-bit codec (core/q8.h) -------------------------------------------------
void check_codec_args(const char* fn, int64_t block_size) {
  TORCH_CHECK(block_size >= 1, "fusedopt.", fn, ": block_size must be a positive integer, got ", block_size);
}

at::Tensor codec_input(const at::Tensor& x) {
  TORCH_CHECK(x.layout() == at::kStrided, "fusedopt.quantize_blockwise: x must be a dense tensor");
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kHalf || x.scalar_type() == at::kBFloat16,
              "fusedopt.quantize_blockwise: x must be float32, float16 or bfloat16, got ", x.scalar_type());
  return x.to(at::kFloat).contiguous();
}

void check_codes(const char* fn, const at::Tensor& codes, const at::Tensor& absmax, int64_t block_size) {
  check_codec_args(fn, block_size);
  TORCH_CHECK(codes.scalar_type() == at::kByte, "fusedopt.", fn, ": codes must be a uint8 tensor, got ",
              codes.scalar_type());
  const int64_t nb = (codes.numel() + block_size - 1) / block_size;
  TORCH_CHECK(absmax.scalar_type() == at::kFloat && absmax.numel() == nb, "fusedopt.", fn,
              ": absmax must be a float32 tensor of ceil(codes.numel() / block_size) = ", nb, " elements, got ",
              absmax.scalar_type(), " ", absmax.sizes());
  TORCH_CHECK(absmax.device() == codes.device(), "fusedopt.", fn, ": absmax is on ", absmax.device(),
              " but codes are on ", codes.device());
}

std::tuple<at::Tensor, at::Tensor> quantize_blockwise_cpu(const at::Tensor& x, int64_t block_size, bool is_signed) {
  check_codec_args("quantize_blockwise", block_size);
  const at::Tensor xf = codec_input(x);
  at::Tensor codes = at::empty(x.sizes(), x.options().dtype(at::kByte));
  at::Tensor absmax = at::empty({(x.numel() + block_size - 1) / block_size}, x.options().dtype(at::kFloat));
  if (x.numel() > 0)
    cpu::q8_quantize(xf.data_ptr<float>(), x.numel(), block_size, is_signed, codes.data_ptr<uint8_t>(),
                     absmax.data_ptr<float>(), at::get_num_threads());
  return {codes, absmax};
}

at::Tensor dequantize_blockwise_cpu(const at::Tensor& codes, const at::Tensor& absmax, int64_t block_size,
                                    bool is_signed, at::ScalarType dtype) {
  check_codes("dequantize_blockwise", codes, absmax, block_size);
  const at::Tensor c = codes.contiguous(), am = absmax.contiguous();
  at::Tensor out = at::empty(codes.sizes(), codes.options().dtype(at::kFloat));
  if (codes.numel() > 0)
    cpu::q8_dequantize(c.data_ptr<uint8_t>(), am.data_ptr<float>(), codes.numel(), block_size, is_signed,
                       out.data_ptr<float>(), at::get_num_threads());
  return dtype == at::kFloat ? out : out.to(dtype);
}

#ifdef FUSEDOPT_WITH_CUDA
std::tuple<at::Tensor, at::Tensor> quantize_blockwise_cuda(const at::Tensor& x, int64_t block_size, bool is_signed) {
  check_codec_args("quantize_blockwise", block_size);
  c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor xf = codec_input(x);
  at::Tensor codes = at::empty(x.sizes(), x.options().dtype(at::kByte));
  at::Tensor absmax = at::empty({(x.numel() + block_size - 1) / block_size}, x.options().dtype(at::kFloat));
  if (x.numel() > 0)
    cuda::q8_quantize(xf.data_ptr<float>(), x.numel(), block_size, is_signed, codes.data_ptr<uint8_t>(),
                      absmax.data_ptr<float>(), c10::cuda::getCurrentCUDAStream(x.device().index()).stream());
  return {codes, absmax};
}

at::Tensor dequantize_blockwise_cuda(const at::Tensor& codes, const at::Tensor& absmax, int64_t block_size,
                                     bool is_signed, at::ScalarType dtype) {
  check_codes("dequantize_blockwise", codes, absmax, block_size);
  c10::cuda::CUDAGuard guard(codes.device());
  const at::Tensor c = codes.contiguous(), am = absmax.contiguous();
  at::Tensor out = at::empty(codes.sizes(), codes.options().dtype(at::kFloat));
  if (codes.numel() > 0)
    cuda::q8_dequantize(c.data_ptr<uint8_t>(), am.data_ptr<float>(), codes.numel(), block_size, is_signed,
                        out.data_ptr<float>(), c10::cuda::getCurrentCUDAStream(codes.device().index()).stream());
  return dtype == at::kFloat ? out : out.to(dtype);
}
#endif

}  // namespace
}  // namespace fusedopt

TORCH_LIBRARY(fusedopt, m) {
  for (const auto& r : fusedopt::kRules) m.def(fusedopt::schema_of(r).c_str());
  m.def("quantize_blockwise(Tensor x, int block_size=256, bool signed=True) -> (Tensor codes, Tensor absmax)");
  m.def("dequantize_blockwise(Tensor codes, Tensor absmax, int block_size=256, bool signed=True, "
        "ScalarType dtype=float) -> Tensor");
}

TORCH_LIBRARY_IMPL(fusedopt, CPU, m) {
  m.impl("quantize_blockwise", &fusedopt::quantize_blockwise_cpu);
  m.impl("dequantize_blockwise", &fusedopt::dequantize_blockwise_cpu);
  fusedopt::register_rules(m, false);
}

// Sparse grads reach the dispatcher as SparseCPU / SparseCUDA: route them to the same
// kernels, whose checks reject them with a message naming the tensor.
TORCH_LIBRARY_IMPL(fusedopt, SparseCPU, m) {
  fusedopt::register_rules(m, false);
}

#ifdef FUSEDOPT_WITH_CUDA
TORCH_LIBRARY_IMPL(fusedopt, SparseCUDA, m) {
  fusedopt::register_rules(m, true);
}

TORCH_LIBRARY_IMPL(fusedopt, CUDA, m) {
  m.impl("quantize_blockwise", &fusedopt::quantize_blockwise_cuda);
  m.impl("dequantize_blockwise", &fusedopt::dequantize_blockwise_cuda);
  fusedopt::register_rules(m, true);
}
#endif

TORCH_LIBRARY_FRAGMENT(fusedopt, m) {
  m.class_<fusedopt::Plan>("Plan")
      .def(torch::init<std::string, std::vector<at::Tensor>, std::vector<at::Tensor>, std::vector<at::Tensor>,
                       std::vector<int64_t>, std::vector<at::Tensor>, std::vector<at::Tensor>, std::vector<at::Tensor>,
                       std::vector<at::Tensor>, int64_t, int64_t>())
      .def("step", &fusedopt::Plan::step);
}
