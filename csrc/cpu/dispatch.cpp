// Runtime ISA selection for the CPU kernels (no -march=native in what ships).
#include <cstdlib>
#include <cstring>

#include "../core/rule_table.h"
#include "api.h"

namespace fusedopt::cpu {

#define FO_DECLARE_KERNEL(op, Rule, states) void op(const Launch&);
#define FO_DECLARE_REDUCE        \
  void reduce(const ReduceArgs&); \
  void row_col(const RowColArgs&); \
  void clip(const ClipArgs&);       \
  void adafactor(const AfArgs&);
namespace scalar {
FO_ELEMENTWISE_RULES(FO_DECLARE_KERNEL)
FO_DECLARE_REDUCE
}
#if defined(__x86_64__) && defined(__GNUC__)
#define FO_HAVE_X86_ISAS 1
namespace avx2 {
FO_ELEMENTWISE_RULES(FO_DECLARE_KERNEL)
FO_DECLARE_REDUCE
}
namespace avx512 {
FO_ELEMENTWISE_RULES(FO_DECLARE_KERNEL)
FO_DECLARE_REDUCE
}
#endif
#undef FO_DECLARE_KERNEL
#undef FO_DECLARE_REDUCE

static Isa detect() {
  Isa best = Isa::Scalar;
#ifdef FO_HAVE_X86_ISAS
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = Isa::Avx2;
  if (best == Isa::Avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    best = Isa::Avx512;
#endif
  // FUSEDOPT_CPU_ISA=scalar|avx2|avx512 caps the choice (for tests and benchmarks).
  if (const char* cap = std::getenv("FUSEDOPT_CPU_ISA")) {
    Isa want = best;
    if (!std::strcmp(cap, "scalar")) want = Isa::Scalar;
    if (!std::strcmp(cap, "avx2")) want = Isa::Avx2;
    if (!std::strcmp(cap, "avx512")) want = Isa::Avx512;
    if (int(want) < int(best)) best = want;
  }
  return best;
}

Isa active_isa() {
  static const Isa isa = detect();
  return isa;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Avx2: return "avx2";
    case Isa::Avx512: return "avx512";
    default: return "scalar";
  }
}

Kernel kernel_for(const char* name, Isa isa) {
#define FO_PICK(op, Rule, states)                                        \
  if (!std::strcmp(name, #op)) {                                         \
    FO_PICK_ISA(op)                                                      \
    return &scalar::op;                                                  \
  }
#ifdef FO_HAVE_X86_ISAS
#define FO_PICK_ISA(op)                                \
  if (isa == Isa::Avx512) return &avx512::op;          \
  if (isa == Isa::Avx2) return &avx2::op;
#else
#define FO_PICK_ISA(op) (void)isa;
#endif
  FO_ELEMENTWISE_RULES(FO_PICK)
#undef FO_PICK
#undef FO_PICK_ISA
  return nullptr;
}

Kernel kernel(const char* name) { return kernel_for(name, active_isa()); }

ReduceKernel reduce_kernel(Isa isa) {
#ifdef FO_HAVE_X86_ISAS
  if (isa == Isa::Avx512) return &avx512::reduce;
  if (isa == Isa::Avx2) return &avx2::reduce;
#endif
  (void)isa;
  return &scalar::reduce;
}

ClipKernel clip_kernel(Isa isa) {
#ifdef FO_HAVE_X86_ISAS
  if (isa == Isa::Avx512) return &avx512::clip;
  if (isa == Isa::Avx2) return &avx2::clip;
#endif
  (void)isa;
  return &scalar::clip;
}

AdafactorKernel adafactor_kernel(Isa isa) {
#ifdef FO_HAVE_X86_ISAS
  if (isa == Isa::Avx512) return &avx512::adafactor;
  if (isa == Isa::Avx2) return &avx2::adafactor;
#endif
  (void)isa;
  return &scalar::adafactor;
}

RowColKernel rowcol_kernel(Isa isa) {
#ifdef FO_HAVE_X86_ISAS
  if (isa == Isa::Avx512) return &avx512::row_col;
  if (isa == Isa::Avx2) return &avx2::row_col;
#endif
  (void)isa;
  return &scalar::row_col;
}

bool openmp_enabled() {
#ifdef _OPENMP
  return true;
#else
  return false;
#endif
}

}  // namespace fusedopt::cpu
