// Body of one ISA's kernel TU. The includer defines FO_ISA (namespace tag) and
// FO_ISA_TARGET (a GCC target string, or nothing for the baseline build).
// System headers come first, outside the target region, so only our (always-inline)
// code is compiled for the ISA.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>  // q8_block.h's AVX2 / AVX-512 bodies
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

#ifdef FO_ISA_TARGET
#define FO_STR_(x) #x
#define FO_TARGET_PRAGMA(t) _Pragma(FO_STR_(GCC target(t)))
#pragma GCC push_options
FO_TARGET_PRAGMA(FO_ISA_TARGET)
#endif

#include "../core/rule_table.h"
#include "engine.h"
#include "reduce_impl.h"
#include "adafactor_impl.h"

namespace fusedopt::cpu::FO_ISA {
#define FO_DEFINE_KERNEL(op, Rule, states) \
  void op(const Launch& L) { dispatch<rules::Rule>(L); }
FO_ELEMENTWISE_RULES(FO_DEFINE_KERNEL)
#undef FO_DEFINE_KERNEL
void reduce(const ReduceArgs& a) { reduce_dispatch(a); }
void row_col(const RowColArgs& a) { rowcol_dispatch(a); }
void clip(const ClipArgs& a) { clip_dispatch(a); }
void adafactor(const AfArgs& a) { adafactor_dispatch(a); }
}  // namespace fusedopt::cpu::FO_ISA

#ifdef FO_ISA_TARGET
#pragma GCC pop_options
#endif
