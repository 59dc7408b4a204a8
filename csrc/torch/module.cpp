// The Python module fusedopt._C: importing it runs the static TORCH_LIBRARY
// registrars of ops.cpp. pybind11 is used here only, for build_info().
#include <pybind11/pybind11.h>

#include "../core/rule_table.h"
#include "../cpu/api.h"

#ifndef FUSEDOPT_VERSION
#define FUSEDOPT_VERSION "0.0.0"
#endif
#ifndef FUSEDOPT_CUDA_ARCHS
#define FUSEDOPT_CUDA_ARCHS ""
#endif

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "fusedopt compiled extension (ops are registered with the torch dispatcher on import)";
  m.def("build_info", []() {
    py::dict d;
    d["version"] = FUSEDOPT_VERSION;
#ifdef FUSEDOPT_WITH_CUDA
    d["backends"] = py::make_tuple("cpu", "cuda");
    d["cuda_archs"] = FUSEDOPT_CUDA_ARCHS;
#else
    d["backends"] = py::make_tuple("cpu");
    d["cuda_archs"] = "";
#endif
    d["cpu_isa"] = fusedopt::cpu::isa_name(fusedopt::cpu::active_isa());
    d["cpu_isas_compiled"] =
#if defined(__x86_64__)
        py::make_tuple("scalar", "avx2", "avx512");
#else
        py::make_tuple("scalar");
#endif
    d["openmp"] = fusedopt::cpu::openmp_enabled();
    return d;
  });
  // The rule table's state strings, marks included ('+' non-negative state, '@' per-tensor scalar):
  // the Python layer reads which states use the unsigned 8-bit map from here, not from a copy.
  m.def("rule_states", []() {
    py::dict d;
#define FO_RULE_STATES(op, Rule, states) d[#op] = states;
    FO_ELEMENTWISE_RULES(FO_RULE_STATES)
#undef FO_RULE_STATES
    return d;
  });
}
