// Body of one generated CPU kernel unit (CMakeLists.txt writes one per ISA and shard). The includer
// defines FO_ISA (namespace tag), FO_ISA_TARGET (a GCC target string, or nothing for the baseline
// build) and either FO_SHARD (this unit holds the rules r with r % FO_NUM_SHARDS == FO_SHARD, see
// core/shards.h) or FO_REDUCE (this unit holds the reduction engine and Adafactor's passes).
// System headers come first, outside the target region, so only our (always-inline) code is
// compiled for the ISA.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>
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
#include "../core/shards.h"
#include "api.h"

#if defined(FO_SHARD)
#include "engine.h"

namespace fusedopt::cpu::FO_ISA {
FO_DEFINE_SHARD_FILL()
}  // namespace fusedopt::cpu::FO_ISA

#elif defined(FO_REDUCE)
#include "reduce_impl.h"  // before adafactor_impl.h, which calls it
#include "adafactor_impl.h"

namespace fusedopt::cpu::FO_ISA {
void reduce(const ReduceArgs& a) { reduce_dispatch(a); }
void row_col(const RowColArgs& a) { rowcol_dispatch(a); }
void clip(const ClipArgs& a) { clip_dispatch(a); }
void adafactor(const AfArgs& a) { adafactor_dispatch(a); }
}  // namespace fusedopt::cpu::FO_ISA

#else
#error "define FO_SHARD or FO_REDUCE before including kernels_impl.h"
#endif

#ifdef FO_ISA_TARGET
#pragma GCC pop_options
#endif
