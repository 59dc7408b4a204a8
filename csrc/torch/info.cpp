// What the Python layer reads of the build, as ops returning JSON text:
//   torch.ops.fusedopt.build_info()  version, backends, CUDA archs, the CPU SIMD level in use, OpenMP
//   torch.ops.fusedopt.rule_states() each rule's state string, marks included ('+' non-negative state:
//                                     the unsigned 8-bit map; '@' per-tensor scalar state)
#include <torch/library.h>

#include <sstream>
#include <string>

#include "../core/rule_table.h"
#include "../cpu/api.h"

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
#if defined(__x86_64__)
  o << ", \"cpu_isas_compiled\": [\"scalar\", \"avx2\", \"avx512\"]";
#else
  o << ", \"cpu_isas_compiled\": [\"scalar\"]";
#endif
  o << ", \"openmp\": " << (cpu::openmp_enabled() ? "true" : "false") << "}";
  return o.str();
}

std::string rule_states() {
  std::ostringstream o;
  o << "{";
  const char* sep = "";
#define FO_RULE_STATES(op, Rule, states) \
  o << sep << quoted(#op) << ": " << quoted(states); \
  sep = ", ";
  FO_ELEMENTWISE_RULES(FO_RULE_STATES)
#undef FO_RULE_STATES
  o << "}";
  return o.str();
}

}  // namespace
}  // namespace fusedopt

TORCH_LIBRARY_FRAGMENT(fusedopt, m) {
  m.def("build_info() -> str", &fusedopt::build_info);
  m.def("rule_states() -> str", &fusedopt::rule_states);
}
