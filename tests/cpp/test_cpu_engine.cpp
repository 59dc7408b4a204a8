// Tests of the CPU multi-tensor engine (csrc/cpu) through fusedopt::cpu::kernel_for(name, isa),
// for every ISA the running CPU supports.
//
// A Launch is built by hand over tensors of 0, 1, 7, 4097 and 70000 (> kChunk) elements, for
// every param storage (fp32, fp64, fp16, bf16, bf16 + stochastic rounding, bf16 + Kahan) and
// state storage (fp32, bf16), with and without maximize, grad_scale, found_inf, weight decay.
// Every ISA's result must equal, bit for bit, the rule applied in a plain loop written here
// (with its own load/store code on top of numeric.h's conversions), and hence each other.
// Independent checks: found_inf leaves everything (steps too) untouched; grad_scale writes the
// unscaled grads back; maximize with g equals minimize with -g.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/aux.h"
#include "core/launch.h"
#include "core/numeric.h"
#include "core/reduce.h"
#include "core/rule_table.h"
#include "cpu/api.h"
#include "harness.h"

using namespace fusedopt;
using fusedopt::cpu::Isa;

namespace {

// ---- which ISAs can run here -------------------------------------------------------
bool isa_supported(Isa isa) {
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  switch (isa) {
    case Isa::Scalar: return true;
    case Isa::Avx2: return avx2;
    case Isa::Avx512:
      return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  }
  return false;
#else
  return isa == Isa::Scalar;
#endif
}

std::vector<Isa> supported_isas() {
  std::vector<Isa> v;
  for (Isa i : {Isa::Scalar, Isa::Avx2, Isa::Avx512})
    if (isa_supported(i)) v.push_back(i);
  return v;
}

// ---- host tensors ------------------------------------------------------------------------
size_t dt_size(Dt d) { return d == Dt::F64 ? 8 : d == Dt::F32 ? 4 : 2; }

void put(Dt d, std::vector<uint8_t>& buf, int64_t i, double v) {
  uint8_t* p = buf.data();
  switch (d) {
    case Dt::F32: reinterpret_cast<float*>(p)[i] = float(v); break;
    case Dt::F64: reinterpret_cast<double*>(p)[i] = v; break;
    case Dt::F16: reinterpret_cast<uint16_t*>(p)[i] = f32_to_f16_rne(float(v)); break;
    case Dt::BF16: reinterpret_cast<uint16_t*>(p)[i] = f32_to_bf16_rne(float(v)); break;
    default: std::abort();
  }
}

double get(Dt d, const std::vector<uint8_t>& buf, int64_t i) {
  const uint8_t* p = buf.data();
  switch (d) {
    case Dt::F32: return reinterpret_cast<const float*>(p)[i];
    case Dt::F64: return reinterpret_cast<const double*>(p)[i];
    case Dt::F16: return f16_to_f32(reinterpret_cast<const uint16_t*>(p)[i]);
    case Dt::BF16: return bf16_to_f32(reinterpret_cast<const uint16_t*>(p)[i]);
    default: std::abort();
  }
}

struct HostTensor {
  int64_t n = 0;
  std::vector<uint8_t> param, grad, comp, state[kMaxStates];
  float step32 = 0;
  double step64 = 0;
  bool operator==(const HostTensor& o) const {
    bool eq = n == o.n && param == o.param && grad == o.grad && comp == o.comp && step32 == o.step32 &&
              step64 == o.step64;
    for (int k = 0; k < kMaxStates; ++k) eq = eq && state[k] == o.state[k];
    return eq;
  }
};

// What one op call looks like.
struct Config {
  std::string name;
  const char* op;   // rule table op name
  int variant;      // compile-time variant (adam: 1 = amsgrad)
  int rflags;       // rule runtime flags (adam: decoupled)
  int nstates;
  double hyper[4];
  double lr;
  Dt param_dt, state_dt;
  ParamMode mode;
  bool maximize;
  float grad_scale;  // 0: none
  int found_inf;     // -1: none, else its value
  bool step_f64;
  int nthreads;
  int nsteps;
  double step0;      // initial step count
};

const int64_t kSizes[] = {0, 1, 7, 4097, 70000};

// Deterministic data for a config.
std::vector<HostTensor> make_tensors(const Config& c, uint64_t seed) {
  fo_test::Rng r(seed);
  const Dt sdt = c.param_dt == Dt::F64 ? Dt::F64 : c.state_dt;
  const bool adamax = !std::strcmp(c.op, "adamax");
  std::vector<HostTensor> ts;
  for (int64_t n : kSizes) {
    HostTensor t;
    t.n = n;
    t.param.resize(size_t(n) * dt_size(c.param_dt));
    t.grad.resize(size_t(n) * dt_size(c.param_dt));
    if (c.mode == ParamMode::Kahan) t.comp.resize(size_t(n) * 2);
    for (int k = 0; k < c.nstates; ++k) t.state[k].resize(size_t(n) * dt_size(sdt));
    for (int64_t i = 0; i < n; ++i) {
      const double p = r.normalish();
      put(c.param_dt, t.param, i, p);
      if (c.mode == ParamMode::Kahan) {  // hi + lo split of a value with more bits than bf16
        const double lo = p - get(Dt::BF16, t.param, i);
        put(Dt::BF16, t.comp, i, lo);
      }
      const double g = r.normalish() * (i % 13 == 5 ? 0.0 : 1.0) * (c.grad_scale != 0 ? c.grad_scale : 1.0);
      put(c.param_dt, t.grad, i, g);
      const double m = 0.1 * r.normalish();
      const double v = adamax ? std::fabs(r.normalish()) + 0.05 : 0.01 * std::fabs(r.normalish());
      put(sdt, t.state[0], i, m);
      put(sdt, t.state[1], i, v);
      if (c.nstates > 2) put(sdt, t.state[2], i, v + (i % 3 == 0 ? 0.0 : 0.01 * std::fabs(r.normalish())));
    }
    t.step32 = float(c.step0);
    t.step64 = c.step0;
    ts.push_back(std::move(t));
  }
  return ts;
}

// Launch over host tensors (pointers into `ts`; `ptrs` must outlive the call).
Launch make_launch(const Config& c, std::vector<HostTensor>& ts, std::vector<TensorPtrs>& ptrs, const float* scale,
                   const float* inf) {
  ptrs.clear();
  for (HostTensor& t : ts) {
    TensorPtrs p{};
    p.param = t.param.data();
    p.grad = t.grad.data();
    for (int k = 0; k < c.nstates; ++k) p.state[k] = t.state[k].data();
    p.comp = c.mode == ParamMode::Kahan ? t.comp.data() : nullptr;
    p.step = c.step_f64 ? static_cast<void*>(&t.step64) : static_cast<void*>(&t.step32);
    p.numel = t.n;
    ptrs.push_back(p);
  }
  Launch L{};
  L.tensors = ptrs.data();
  L.ntensors = int64_t(ptrs.size());
  L.nstates = c.nstates;
  for (int h = 0; h < 4; ++h) L.hyper[h] = c.hyper[h];
  L.lr = c.lr;
  L.lr_ptr = nullptr;
  L.grad_scale = scale;
  L.found_inf = inf;
  L.flags = int64_t(c.maximize ? int64_t(kFlagMaximize) : int64_t(0)) | (int64_t(c.rflags) << kRuleFlagShift) |
            (int64_t(c.variant) << kVariantShift) | (c.mode == ParamMode::StochRound ? int64_t(kFlagStochRound) : int64_t(0));
  L.param_dt = c.param_dt;
  L.state_dt = c.param_dt == Dt::F64 ? Dt::F64 : c.state_dt;
  L.param_mode = c.mode;
  L.step_f64 = c.step_f64;
  L.nthreads = c.nthreads;
  L.stream = nullptr;
  return L;
}

// ---- the plain-loop reference ----------------------------------------------------------------
// Its own element access (not storage.h's policies): numeric.h conversions only.
template <class T>
struct RefParam {
  Dt dt;
  ParamMode mode;
  void* p;
  uint16_t* comp;
  uint32_t seed;
  T load(int64_t i) const {
    switch (dt) {
      case Dt::F32: return T(static_cast<float*>(p)[i]);
      case Dt::F64: return T(static_cast<double*>(p)[i]);
      case Dt::F16: return T(f16_to_f32(static_cast<uint16_t*>(p)[i]));
      default: {
        const float hi = bf16_to_f32(static_cast<uint16_t*>(p)[i]);
        return mode == ParamMode::Kahan ? T(hi) + T(bf16_to_f32(comp[i])) : T(hi);
      }
    }
  }
  void store(int64_t i, T v) const {
    switch (dt) {
      case Dt::F32: static_cast<float*>(p)[i] = float(v); return;
      case Dt::F64: static_cast<double*>(p)[i] = double(v); return;
      case Dt::F16: static_cast<uint16_t*>(p)[i] = f32_to_f16_rne(float(v)); return;
      default: break;
    }
    uint16_t* q = static_cast<uint16_t*>(p);
    const float f = float(v);
    if (mode == ParamMode::StochRound) {
      // the documented stream: bits = mix32(seed ^ index * 0x9e3779b9), seed = sr_seed(tensor, step)
      q[i] = f32_to_bf16_sr(f, mix32(seed ^ uint32_t(i) * 0x9e3779b9u));
    } else if (mode == ParamMode::Kahan) {
      q[i] = f32_to_bf16_rne(f);
      comp[i] = f32_to_bf16_rne(f - bf16_to_f32(q[i]));
    } else {
      q[i] = f32_to_bf16_rne(f);
    }
  }
};

template <class T>
T ref_load(Dt d, void* p, int64_t i) {
  switch (d) {
    case Dt::F32: return T(static_cast<float*>(p)[i]);
    case Dt::F64: return T(static_cast<double*>(p)[i]);
    case Dt::F16: return T(f16_to_f32(static_cast<uint16_t*>(p)[i]));
    default: return T(bf16_to_f32(static_cast<uint16_t*>(p)[i]));
  }
}
template <class T>
void ref_store(Dt d, void* p, int64_t i, T v) {
  switch (d) {
    case Dt::F32: static_cast<float*>(p)[i] = float(v); return;
    case Dt::F64: static_cast<double*>(p)[i] = double(v); return;
    case Dt::F16: static_cast<uint16_t*>(p)[i] = f32_to_f16_rne(float(v)); return;
    default: static_cast<uint16_t*>(p)[i] = f32_to_bf16_rne(float(v)); return;
  }
}

template <class Rule, int V, class T>
void ref_step(const Launch& L) {
  if (L.found_inf && *L.found_inf != 0.0f) return;
  constexpr int K = Rule::num_states(V);
  const T sign = (L.flags & kFlagMaximize) ? T(-1) : T(1);
  for (int64_t t = 0; t < L.ntensors; ++t) {
    const TensorPtrs& tp = L.tensors[t];
    double step;
    if (L.step_f64) {
      step = (*static_cast<double*>(tp.step) += 1.0);
    } else {
      step = double(*static_cast<float*>(tp.step) += 1.0f);
    }
    double aux = 0.0;
    if constexpr (HasAux<Rule>) {  // per-tensor scalar state (core/aux.h), advanced after the step
      float* a = static_cast<float*>(tp.aux);
      *a = Rule::advance_aux(L.hyper, step, *a);
      aux = double(*a);
    }
    const auto c = make_ctx<Rule, T>(L.hyper, L.lr, step, rule_flags(L.flags), aux);
    const RefParam<T> pp{L.param_dt, L.param_mode, tp.param, static_cast<uint16_t*>(tp.comp),
                         sr_seed(uint32_t(t), step)};
    for (int64_t i = 0; i < tp.numel; ++i) {
      T g = ref_load<T>(L.param_dt, tp.grad, i);
      if (L.grad_scale) {
        g = g / T(*L.grad_scale);
        ref_store<T>(L.param_dt, tp.grad, i, g);
      }
      g = g * sign;
      T p = pp.load(i);
      T s[kMaxStates];
      for (int k = 0; k < K; ++k) s[k] = ref_load<T>(L.state_dt, tp.state[k], i);
      Rule::template update<V>(p, g, s, c);
      pp.store(i, p);
      for (int k = 0; k < K; ++k) ref_store<T>(L.state_dt, tp.state[k], i, s[k]);
    }
  }
}

template <class Rule>
void ref_rule_elementwise(const Launch& L);

template <class Rule>
void ref_rule(const Launch& L) {
  if constexpr (ReadsReduced<Rule> || HasRedOut<Rule> || NoStepBump<Rule>) {
    // cross-tensor rules (core/reduce.h) are tested from Python (tests/test_lamb_lars.py)
    (void)L;
    std::abort();
  } else {
    ref_rule_elementwise<Rule>(L);
  }
}

template <class Rule>
void ref_rule_elementwise(const Launch& L) {
  const int v = variant_of(L.flags);
  const bool f64 = L.param_dt == Dt::F64;
  if constexpr (Rule::kNumVariants > 1) {
    if (v == 1) return f64 ? ref_step<Rule, 1, double>(L) : ref_step<Rule, 1, float>(L);
  }
  return f64 ? ref_step<Rule, 0, double>(L) : ref_step<Rule, 0, float>(L);
}

void ref_kernel(const char* op, const Launch& L) {
#define FO_REF_PICK(op_name, Rule) \
  if (!std::strcmp(op, #op_name)) return ref_rule<rules::Rule>(L);
  FO_ELEMENTWISE_RULES(FO_REF_PICK)
#undef FO_REF_PICK
  std::abort();
}

// ---- running a config ------------------------------------------------------------------
// Runs c.nsteps steps with `kernel` (or the reference when null) on a copy of `init`.
std::vector<HostTensor> run(const Config& c, const std::vector<HostTensor>& init, cpu::Kernel kernel) {
  std::vector<HostTensor> ts = init;
  std::vector<TensorPtrs> ptrs;
  const float scale = c.grad_scale;
  const float inf = float(c.found_inf);
  for (int s = 0; s < c.nsteps; ++s) {
    Launch L = make_launch(c, ts, ptrs, c.grad_scale != 0 ? &scale : nullptr, c.found_inf >= 0 ? &inf : nullptr);
    if (kernel) {
      kernel(L);
    } else {
      ref_kernel(c.op, L);
    }
  }
  return ts;
}

// First difference between two results, for the failure message.
std::string first_diff(const Config& c, const std::vector<HostTensor>& a, const std::vector<HostTensor>& b) {
  const Dt sdt = c.param_dt == Dt::F64 ? Dt::F64 : c.state_dt;
  for (size_t t = 0; t < a.size(); ++t) {
    if (a[t].step32 != b[t].step32 || a[t].step64 != b[t].step64)
      return fo_test::fmt("tensor %zu: step %g/%g vs %g/%g", t, double(a[t].step32), a[t].step64,
                          double(b[t].step32), b[t].step64);
    struct Arr {
      const char* name;
      const std::vector<uint8_t> *x, *y;
      Dt d;
    };
    std::vector<Arr> arrs = {{"param", &a[t].param, &b[t].param, c.param_dt},
                             {"grad", &a[t].grad, &b[t].grad, c.param_dt},
                             {"comp", &a[t].comp, &b[t].comp, Dt::BF16}};
    for (int k = 0; k < c.nstates; ++k) arrs.push_back({"state", &a[t].state[k], &b[t].state[k], sdt});
    for (const Arr& r : arrs) {
      if (*r.x == *r.y) continue;
      const size_t es = dt_size(r.d);
      int64_t ndiff = 0, first = -1;
      for (size_t i = 0; i < r.x->size() / es; ++i)
        if (std::memcmp(r.x->data() + i * es, r.y->data() + i * es, es)) {
          ++ndiff;
          if (first < 0) first = int64_t(i);
        }
      return fo_test::fmt("tensor %zu (n=%lld) %s: %lld elements differ, first [%lld] %.9g vs %.9g", t,
                          (long long)a[t].n, r.name, (long long)ndiff, (long long)first, get(r.d, *r.x, first),
                          get(r.d, *r.y, first));
    }
  }
  return "";
}

const char* isa_str(Isa i) { return cpu::isa_name(i); }

// Every supported ISA against the reference (and so against each other).
void check_config(const Config& c, uint64_t seed) {
  const std::vector<HostTensor> init = make_tensors(c, seed);
  const std::vector<HostTensor> want = run(c, init, nullptr);
  for (Isa isa : supported_isas()) {
    cpu::Kernel k = cpu::kernel_for(c.op, isa);
    if (!CHECK_MSG(k != nullptr, "no kernel for %s", c.op)) continue;
    const std::vector<HostTensor> got = run(c, init, k);
    const bool same = got == want;
    CHECK_MSG(same, "%s [%s] vs plain loop: %s", c.name.c_str(), isa_str(isa), first_diff(c, got, want).c_str());
  }
  // the reference did something (unless told to skip): params moved and steps advanced
  if (c.found_inf <= 0 && c.nsteps > 0) {
    bool moved = false;
    for (size_t t = 0; t < init.size(); ++t) moved = moved || (init[t].n > 0 && init[t].param != want[t].param);
    CHECK_MSG(moved, "%s: the reference did not move any param", c.name.c_str());
    const double s = c.step_f64 ? want[0].step64 : double(want[0].step32);
    CHECK_MSG(s == c.step0 + c.nsteps, "%s: step %g", c.name.c_str(), s);  // the empty tensor's step too
  }
}

struct RuleCase {
  const char* label;
  const char* op;
  int variant, rflags, nstates;
};
const RuleCase kRuleCases[] = {
    {"adam", "adam", 0, 0, 2},
    {"adam+amsgrad", "adam", 1, 0, 3},
    {"adam+decoupled", "adam", 0, rules::Adam::kDecoupled, 2},
    {"adam+amsgrad+decoupled", "adam", 1, rules::Adam::kDecoupled, 3},
    {"adamw", "adamw", 0, 0, 2},
    {"adamw+amsgrad", "adamw", 1, 0, 3},
    {"adamax", "adamax", 0, 0, 2},
};

struct ParamCase {
  const char* label;
  Dt dt;
  ParamMode mode;
};
const ParamCase kParamCases[] = {
    {"p=f32", Dt::F32, ParamMode::Plain},          {"p=f64", Dt::F64, ParamMode::Plain},
    {"p=f16", Dt::F16, ParamMode::Plain},          {"p=bf16", Dt::BF16, ParamMode::Plain},
    {"p=bf16-sr", Dt::BF16, ParamMode::StochRound}, {"p=bf16-kahan", Dt::BF16, ParamMode::Kahan},
};

// Option sets: (maximize, grad_scale, found_inf, weight decay, step_f64, threads, lr).
// 74105 elements in all: with nthreads > 1 the engine opens an OpenMP region (>= 32768).
// One option set uses 2 threads; threads_do_not_change_results covers more counts.
struct OptCase {
  const char* label;
  bool maximize;
  float grad_scale;
  int found_inf;
  double wd;
  bool step_f64;
  int nthreads;
  double lr;
};
const OptCase kOptCases[] = {
    {"plain", false, 0.f, -1, 0.0, false, 2, 1e-3},
    {"maximize+wd", true, 0.f, -1, 0.01, false, 1, 1e-2},
    {"grad_scale+wd", false, 1000.f, -1, 0.1, true, 1, 1e-3},
    {"found_inf=0+scale+max", true, 256.f, 0, 0.0, true, 1, 1e-1},  // scaled grads stay finite in fp16
};

Config make_config(const RuleCase& r, const ParamCase& p, Dt sdt, const OptCase& o) {
  Config c;
  c.name = std::string(r.label) + " " + p.label + (p.dt == Dt::F64 ? "" : sdt == Dt::BF16 ? " s=bf16" : " s=f32") +
           " " + o.label;
  c.op = r.op;
  c.variant = r.variant;
  c.rflags = r.rflags;
  c.nstates = r.nstates;
  c.hyper[0] = 0.9;
  c.hyper[1] = 0.999;
  c.hyper[2] = 1e-8;
  c.hyper[3] = o.wd;
  c.lr = o.lr;
  c.param_dt = p.dt;
  c.state_dt = sdt;
  c.mode = p.mode;
  c.maximize = o.maximize;
  c.grad_scale = o.grad_scale;
  c.found_inf = o.found_inf;
  c.step_f64 = o.step_f64;
  c.nthreads = o.nthreads;
  c.nsteps = 2;
  c.step0 = 4;
  return c;
}

template <class F>
void for_each_config(F f) {
  for (const RuleCase& r : kRuleCases)
    for (const ParamCase& p : kParamCases)
      for (Dt sdt : {Dt::F32, Dt::BF16}) {
        if (p.dt == Dt::F64 && sdt == Dt::BF16) continue;  // fp64 params always keep fp64 states
        for (const OptCase& o : kOptCases) f(make_config(r, p, sdt, o));
      }
}

// ================================ tests =========================================================

TEST_CASE(isas_available) {
  std::printf("  ISAs tested here:");
  for (Isa i : supported_isas()) std::printf(" %s", isa_str(i));
  std::printf("  (active: %s, OpenMP: %s)\n", isa_str(cpu::active_isa()), cpu::openmp_enabled() ? "yes" : "no");
  CHECK(!supported_isas().empty());
  CHECK(cpu::kernel_for("no_such_rule", Isa::Scalar) == nullptr);
  CHECK(cpu::kernel("no_such_rule") == nullptr);
  for (const char* op : {"adam", "adamw", "adamax"}) {
    CHECK(cpu::kernel(op) == cpu::kernel_for(op, cpu::active_isa()));
    for (Isa i : {Isa::Scalar, Isa::Avx2, Isa::Avx512}) CHECK(cpu::kernel_for(op, i) != nullptr);
  }
  CHECK(std::string(cpu::isa_name(Isa::Scalar)) == "scalar");
  CHECK(std::string(cpu::isa_name(Isa::Avx2)) == "avx2");
  CHECK(std::string(cpu::isa_name(Isa::Avx512)) == "avx512");
}

// FUSEDOPT_CPU_ISA caps the ISA kernel() uses (ctest runs this case with the variable set).
TEST_CASE(isa_cap_from_env) {
  const char* cap = std::getenv("FUSEDOPT_CPU_ISA");
  Isa best = Isa::Scalar;
  for (Isa i : supported_isas()) best = i;
  Isa want = best;
  if (cap) {
    Isa c = best;
    if (!std::strcmp(cap, "scalar")) c = Isa::Scalar;
    if (!std::strcmp(cap, "avx2")) c = Isa::Avx2;
    if (!std::strcmp(cap, "avx512")) c = Isa::Avx512;
    if (int(c) < int(best)) want = c;
  }
  CHECK_MSG(cpu::active_isa() == want, "FUSEDOPT_CPU_ISA=%s: active %s, want %s", cap ? cap : "(unset)",
            isa_str(cpu::active_isa()), isa_str(want));
  CHECK(cpu::kernel("adam") == cpu::kernel_for("adam", want));
}

TEST_CASE(all_isas_match_plain_loop) {
  uint64_t seed = 1;
  int nconfigs = 0;
  for_each_config([&](const Config& c) {
    check_config(c, seed++);
    ++nconfigs;
  });
  std::printf("  %d configurations x %zu ISAs\n", nconfigs, supported_isas().size());
}

// found_inf != 0: params, grads, states, compensation and steps are all untouched, even with
// grad_scale set (no unscale write-back either).
TEST_CASE(found_inf_skips_everything) {
  uint64_t seed = 1000;
  for_each_config([&](Config c) {
    if (c.hyper[3] != 0.0) return;  // options do not matter when nothing runs: half of them
    c.found_inf = 1;
    c.grad_scale = 512.f;
    const std::vector<HostTensor> init = make_tensors(c, seed++);
    for (Isa isa : supported_isas()) {
      const std::vector<HostTensor> got = run(c, init, cpu::kernel_for(c.op, isa));
      CHECK_MSG(got == init, "%s [%s] found_inf=1 changed: %s", c.name.c_str(), isa_str(isa),
                first_diff(c, got, init).c_str());
    }
  });
}

// With grad_scale the grads are written back divided by the scale (one step: exactly g/scale
// rounded to the grad dtype), and the step equals an unscaled step with those grads.
TEST_CASE(grad_scale_writes_unscaled_grads) {
  for (const ParamCase& p : kParamCases) {
    Config c = make_config(kRuleCases[1], p, Dt::F32, kOptCases[2]);
    c.nsteps = 1;
    c.grad_scale = 3.0f;  // not a power of two: the division rounds
    const std::vector<HostTensor> init = make_tensors(c, 77);
    for (Isa isa : supported_isas()) {
      const std::vector<HostTensor> got = run(c, init, cpu::kernel_for(c.op, isa));
      int64_t bad = 0, n = 0;
      for (size_t t = 0; t < init.size(); ++t)
        for (int64_t i = 0; i < init[t].n; ++i, ++n) {
          const double g0 = get(p.dt, init[t].grad, i);
          std::vector<uint8_t> one(dt_size(p.dt));
          if (p.dt == Dt::F64) {
            put(p.dt, one, 0, g0 / 3.0);
          } else {
            put(p.dt, one, 0, double(float(g0) / 3.0f));
          }
          bad += std::memcmp(one.data(), got[t].grad.data() + size_t(i) * one.size(), one.size()) != 0;
        }
      CHECK_MSG(bad == 0 && n > 0, "%s [%s]: %lld of %lld grads not g/scale", p.label, isa_str(isa), (long long)bad,
                (long long)n);
      // fp32/fp64 grads: the same step without scaling, from the written-back grads, gives the same
      // params and states. (Not for 16-bit grads: the update uses g/scale before it is rounded to
      // the grad dtype, as torch's fused kernels do.)
      if (p.dt != Dt::F32 && p.dt != Dt::F64) continue;
      Config u = c;
      u.grad_scale = 0;
      std::vector<HostTensor> uinit = init;
      for (size_t t = 0; t < init.size(); ++t) uinit[t].grad = got[t].grad;
      const std::vector<HostTensor> ugot = run(u, uinit, cpu::kernel_for(c.op, isa));
      CHECK_MSG(ugot == got, "%s [%s]: scaled step != unscaled step: %s", p.label, isa_str(isa),
                first_diff(c, ugot, got).c_str());
    }
  }
}

// maximize with grads g == minimize with grads -g (params, states, steps), and grads untouched.
TEST_CASE(maximize_is_minimize_of_negated_grad) {
  for (const RuleCase& r : kRuleCases)
    for (const ParamCase& p : kParamCases) {
      Config c = make_config(r, p, Dt::F32, kOptCases[1]);
      const std::vector<HostTensor> init = make_tensors(c, 4242);
      std::vector<HostTensor> neg = init;
      for (HostTensor& t : neg)
        for (int64_t i = 0; i < t.n; ++i) put(p.dt, t.grad, i, -get(p.dt, t.grad, i));
      Config m = c;
      m.maximize = false;
      for (Isa isa : supported_isas()) {
        const std::vector<HostTensor> a = run(c, init, cpu::kernel_for(c.op, isa));
        std::vector<HostTensor> b = run(m, neg, cpu::kernel_for(c.op, isa));
        for (size_t t = 0; t < b.size(); ++t) b[t].grad = init[t].grad;  // compare all but the grads
        CHECK_MSG(a == b, "%s [%s]: maximize(g) != minimize(-g): %s", c.name.c_str(), isa_str(isa),
                  first_diff(c, a, b).c_str());
      }
    }
}

// The thread count does not change results (static split of whole chunks, element-wise work).
TEST_CASE(threads_do_not_change_results) {
  Config c = make_config(kRuleCases[3], kParamCases[4], Dt::BF16, kOptCases[2]);
  const std::vector<HostTensor> init = make_tensors(c, 5);
  for (Isa isa : supported_isas()) {
    c.nthreads = 1;
    const std::vector<HostTensor> one = run(c, init, cpu::kernel_for(c.op, isa));
    for (int nt : {2, 3, 8}) {
      c.nthreads = nt;
      const std::vector<HostTensor> many = run(c, init, cpu::kernel_for(c.op, isa));
      CHECK_MSG(one == many, "[%s] %d threads != 1 thread: %s", isa_str(isa), nt, first_diff(c, one, many).c_str());
    }
  }
}

// An op call with no tensors is a no-op.
TEST_CASE(empty_launch) {
  for (Isa isa : supported_isas()) {
    Launch L{};
    L.tensors = nullptr;
    L.ntensors = 0;
    L.param_dt = Dt::F32;
    L.state_dt = Dt::F32;
    cpu::kernel_for("adam", isa)(L);
    CHECK(true);
  }
}

}  // namespace

int main(int argc, char** argv) { return fo_test::run_all(argc, argv); }

// ---- reduction engine (core/reduce.h): bitwise the same for 1 and 2 threads and for every ISA --------
namespace {
TEST_CASE(reduce_is_bitwise_deterministic_across_threads_and_isas) {
  std::vector<float> a(300001), b(70000), c(5);
  uint32_t x = 12345u;
  for (auto* v : {&a, &b, &c})
    for (auto& e : *v) {
      x = x * 1664525u + 1013904223u;
      e = float(int32_t(x >> 8) % 20001 - 10000) * 1e-3f;
    }
  const void* data[3] = {a.data(), b.data(), c.data()};
  const int64_t numel[3] = {int64_t(a.size()), int64_t(b.size()), int64_t(c.size())};
  double want_total = 0.0;
  for (auto* v : {&a, &b, &c})
    for (float e : *v) want_total += double(e) * double(e);
  float first_per[3] = {}, first_total = 0.f;
  bool have = false;
  for (cpu::Isa isa : {cpu::Isa::Scalar, cpu::Isa::Avx2, cpu::Isa::Avx512}) {
    if (int(isa) > int(cpu::active_isa())) continue;
    for (int threads : {1, 2}) {
      float per[3], total;
      ReduceArgs r{};
      r.data = data;
      r.numel = numel;
      r.ntensors = 3;
      r.dt = Dt::F32;
      r.op = RedOp::SumSq;
      r.per_tensor = per;
      r.total = &total;
      r.nthreads = threads;
      cpu::reduce_kernel(isa)(r);
      CHECK(std::fabs(double(total) - want_total) <= 1e-6 * want_total);
      if (!have) {
        std::memcpy(first_per, per, sizeof per);
        first_total = total;
        have = true;
      }
      CHECK(std::memcmp(per, first_per, sizeof per) == 0);
      CHECK(std::memcmp(&total, &first_total, sizeof total) == 0);
    }
  }
}
}  // namespace
