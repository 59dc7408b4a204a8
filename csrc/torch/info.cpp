// What the Python layer reads of the build, as ops returning JSON text:
//   torch.ops.fusedopt.build_info()  version, backends, CUDA archs, the CPU SIMD level in use, OpenMP
//   torch.ops.fusedopt.rule_specs()  every rule's facts as its header states them (core/rule_facts.h),
//                                     in rule-table order, and the bits of the op's `flags` (config.h):
//     {"flag_bits": {"maximize": 1, "stochastic_rounding": 2}, "rule_flag_shift": 8, "variant_shift": 16,
//      "rules": [{"op": "adam", "lr": 0.001,
//                 "states": [{"name": "exp_avg", "signed": true, "scalar": false, "init": 0.0}, ...],
//                            ("init": "param" for a state that starts as a copy of the param)
//                 "hyper": [{"name": "beta1", "default": 0.9}, ...],
//                 "flags": [{"name": "decoupled_weight_decay", "default": false}],
//                 "variant": [{"name": "amsgrad", "bits": 1, "values": [], "default": 0}],
//                 "num_variants": 2, "slot_masks": [3, 7], "reads_grad": true,
//                 "global_in": 0, "red_in": 0, "red_out": 0}, ...]}
//   The Python layer (fusedopt._ops) builds its rule table, the optimizers' packing of hyperparameters
//   and flags, fusedopt.functional and the fake kernels from it.
#include <torch/library.h>

#include <cstdio>
#include <sstream>
#include <string>

#include "../core/reduce.h"
#include "../core/rule_facts.h"
#include "../core/rule_table.h"
#include "../core/traits.h"
#include "../cpu/api.h"
#include "rule_specs.h"

#ifndef FUSEDOPT_VERSION
#define FUSEDOPT_VERSION "0.0.0"
#endif
#ifndef FUSEDOPT_CUDA_ARCHS
#define FUSEDOPT_CUDA_ARCHS ""
#endif

namespace fusedopt {
namespace {

std::string quoted(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

std::string build_info() {
  std::ostringstream o;
  o << "{\"version\": " << quoted(FUSEDOPT_VERSION);
#ifdef FUSEDOPT_WITH_CUDA
  o << ", \"backends\": [\"cpu\", \"cuda\"], \"cuda_archs\": " << quoted(FUSEDOPT_CUDA_ARCHS);
#else
  o << ", \"backends\": [\"cpu\"], \"cuda_archs\": \"\"";
#endif
  o << ", \"cpu_isa\": " << quoted(cpu::isa_name(cpu::active_isa()));
  o << ", \"cpu_q8_decoder\": " << quoted(cpu::q8_decoder_name());
#if defined(__x86_64__)
  o << ", \"cpu_isas_compiled\": [\"scalar\", \"avx2\", \"avx512\"]";
#else
  o << ", \"cpu_isas_compiled\": [\"scalar\"]";
#endif
  o << ", \"openmp\": " << (cpu::openmp_enabled() ? "true" : "false") << "}";
  return o.str();
}

std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  return buf;
}

template <class R>
void rule_spec(std::ostringstream& o, const char* op) {
  o << "{\"op\": " << quoted(op) << ", \"lr\": " << number(facts::default_lr<R>()) << ", \"states\": [";
  const char* sep = "";
  for (const StateDecl& d : parse_states(R::kStates)) {
    o << sep << "{\"name\": " << quoted(d.name) << ", \"signed\": " << (d.is_signed ? "true" : "false")
      << ", \"scalar\": " << (d.scalar ? "true" : "false")
      << ", \"init\": " << (d.from_param ? std::string("\"param\"") : number(d.init)) << "}";
    sep = ", ";
  }
  o << "], \"hyper\": [";
  sep = "";
  for (int i = 0; i < facts::num_hyper<R>(); ++i) {
    o << sep << "{\"name\": " << quoted(R::kHyper[i].name) << ", \"default\": " << number(R::kHyper[i].value) << "}";
    sep = ", ";
  }
  o << "], \"flags\": [";
  sep = "";
  for (int i = 0; i < facts::num_flags<R>(); ++i) {
    const FlagDecl& f = facts::flags<R>()[i];
    o << sep << "{\"name\": " << quoted(f.name) << ", \"default\": " << (f.value ? "true" : "false") << "}";
    sep = ", ";
  }
  o << "], \"variant\": [";
  sep = "";
  for (int i = 0; i < facts::num_fields<R>(); ++i) {
    const FieldDecl& f = facts::fields<R>()[i];
    o << sep << "{\"name\": " << quoted(f.name) << ", \"bits\": " << f.bits << ", \"values\": [";
    if (f.values != nullptr) {
      std::string v(f.values), cur;
      const char* vs = "";
      for (size_t k = 0; k <= v.size(); ++k) {
        if (k == v.size() || v[k] == '|') {
          o << vs << quoted(cur);
          vs = ", ";
          cur.clear();
        } else {
          cur += v[k];
        }
      }
    }
    o << "], \"default\": " << f.value << "}";
    sep = ", ";
  }
  o << "], \"num_variants\": " << R::kNumVariants << ", \"slot_masks\": [";
  for (int v = 0; v < R::kNumVariants; ++v) o << (v ? ", " : "") << facts::slot_mask<R>(v);
  o << "], \"reads_grad\": " << (reads_grad<R>() ? "true" : "false") << ", \"global_in\": " << global_in_count<R>()
    << ", \"red_in\": " << red_in_count<R>() << ", \"red_out\": " << red_out_count<R>() << "}";
}

std::string rule_specs() {
  std::ostringstream o;
  o << "{\"flag_bits\": {\"maximize\": " << int64_t(kFlagMaximize) << ", \"stochastic_rounding\": "
    << int64_t(kFlagStochRound) << "}, \"rule_flag_shift\": " << int64_t(kRuleFlagShift)
    << ", \"variant_shift\": " << int64_t(kVariantShift) << ", \"rules\": [";
  const char* sep = "";
#define FO_RULE_SPEC(op, Rule) \
  o << sep;                    \
  rule_spec<rules::Rule>(o, #op); \
  sep = ", ";
  FO_ELEMENTWISE_RULES(FO_RULE_SPEC)
#undef FO_RULE_SPEC
  o << "]}";
  return o.str();
}

}  // namespace
}  // namespace fusedopt

TORCH_LIBRARY_FRAGMENT(fusedopt, m) {
  m.def("build_info() -> str", &fusedopt::build_info);
  m.def("rule_specs() -> str", &fusedopt::rule_specs);
}
