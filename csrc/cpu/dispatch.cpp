// Runtime ISA selection for the CPU kernels (no -march=native in what ships).
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "../core/rule_table.h"
#include "../core/shards.h"
#include "api.h"

namespace fusedopt::cpu {

#define FO_DECLARE_FILL(s) void fill_shard_##s(Kernel* table);
#define FO_DECLARE_ISA                \
  FO_SHARD_LIST(FO_DECLARE_FILL)      \
  void reduce(const ReduceArgs&);     \
  void row_col(const RowColArgs&);    \
  void clip(const ClipArgs&);         \
  void adafactor(const AfArgs&);
namespace scalar {
FO_DECLARE_ISA
}
#if defined(__x86_64__) && defined(__GNUC__)
#define FO_HAVE_X86_ISAS 1
namespace avx2 {
FO_DECLARE_ISA
}
namespace avx512 {
FO_DECLARE_ISA
}
#endif
#undef FO_DECLARE_ISA
#undef FO_DECLARE_FILL

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

const char* q8_decoder_name() {
  switch (active_isa()) {
#if defined(__x86_64__)
    case Isa::Avx512: return q8_vbmi_enabled() ? "avx512-vbmi" : "avx512-permute";
#endif
    case Isa::Avx2: return "avx2-gather";
    default: return "scalar";
  }
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Avx2: return "avx2";
    case Isa::Avx512: return "avx512";
    default: return "scalar";
  }
}

namespace {
// Every ISA's kernels, indexed by rule number, filled once from the shards.
struct Tables {
  Kernel k[3][kNumRules] = {};
  Tables() {
#define FO_FILL_scalar(s) scalar::fill_shard_##s(k[int(Isa::Scalar)]);
#define FO_FILL_avx2(s) avx2::fill_shard_##s(k[int(Isa::Avx2)]);
#define FO_FILL_avx512(s) avx512::fill_shard_##s(k[int(Isa::Avx512)]);
    FO_SHARD_LIST(FO_FILL_scalar)
#ifdef FO_HAVE_X86_ISAS
    FO_SHARD_LIST(FO_FILL_avx2)
    FO_SHARD_LIST(FO_FILL_avx512)
#else
    for (int r = 0; r < kNumRules; ++r) k[int(Isa::Avx2)][r] = k[int(Isa::Avx512)][r] = k[int(Isa::Scalar)][r];
#endif
#undef FO_FILL_scalar
#undef FO_FILL_avx2
#undef FO_FILL_avx512
  }
};
const Tables& tables() {
  static const Tables t;
  return t;
}
}  // namespace

const Kernel* kernel_table(Isa isa) { return tables().k[int(isa)]; }

Kernel kernel_at(int rule) {
  if (rule < 0 || rule >= kNumRules) return nullptr;
  static const Kernel* active = kernel_table(active_isa());
  return active[rule];
}

Kernel kernel_for(const char* name, Isa isa) {
  const int r = rule_index(name);
  return r < 0 ? nullptr : kernel_table(isa)[r];
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

namespace {
const float kSignedValues[256] = {FO_Q8_SIGNED_VALUES};
const float kSignedMids[256] = {FO_Q8_SIGNED_MIDS};
const float kUnsignedValues[256] = {FO_Q8_UNSIGNED_VALUES};
const float kUnsignedMids[256] = {FO_Q8_UNSIGNED_MIDS};

struct Q8Tables {
  alignas(64) int32_t bucket[2][kQ8Buckets];
  alignas(64) float half[2][256];
  alignas(64) int32_t hbucket[2][kQ8Buckets];
  alignas(64) int32_t hpacked[2][kQ8BucketHalf];
  alignas(64) uint8_t planes[2][4 * 256];
  Q8Seg seg[2];
  Q8Book books[2];
  Q8Tables() {
    const float* mids[2] = {kUnsignedMids, kSignedMids};
    const float* values[2] = {kUnsignedValues, kSignedValues};
    for (int s = 0; s < 2; ++s) {
      q8_fill_half(values[s], s == 1, half[s]);
      if (!q8_build_buckets(mids[s], bucket[s]) || !q8_build_buckets(half[s], hbucket[s]))
        throw std::logic_error("fusedopt: 8-bit codebook bucket table is ambiguous (internal error)");
      if (!q8_build_packed(half[s], hbucket[s], hpacked[s]))
        throw std::logic_error("fusedopt: 8-bit codebook packed bucket table is inconsistent (internal error)");
      if (!q8_build_segments(half[s], s == 1, &seg[s]))
        throw std::logic_error("fusedopt: 8-bit codebook is not piecewise linear as the encoder expects (internal error)");
      for (int k = 0; k < 256; ++k) {
        uint32_t u;
        std::memcpy(&u, &values[s][k], 4);
        for (int b = 0; b < 4; ++b) planes[s][256 * b + k] = uint8_t(u >> (8 * b));
      }
      books[s] = Q8Book{values[s], mids[s], bucket[s], s == 1, half[s], hbucket[s], hpacked[s], planes[s], &seg[s]};
    }
  }
};
}  // namespace

const Q8Book* q8_books() {
  static const Q8Tables tables;
  return tables.books;
}

void q8_quantize(const float* x, int64_t n, int64_t block, bool is_signed, uint8_t* codes, float* absmax,
                 int nthreads) {
  const Q8Book& bk = q8_books()[is_signed ? 1 : 0];
  const int64_t nblocks = (n + block - 1) / block;
  const float lo = is_signed ? -1.0f : 0.0f;
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1 && n > 65536)
  for (int64_t b = 0; b < nblocks; ++b) {
    const int64_t b0 = b * block, e = b0 + block < n ? b0 + block : n;
    float m = 0.0f;
    for (int64_t i = b0; i < e; ++i) {
      const float a = q8_abs_finite(x[i]);
      m = a > m ? a : m;
    }
    const float inv = q8_inv(m);
    for (int64_t i = b0; i < e; ++i) codes[i] = uint8_t(q8_encode_bucket(bk.mid, bk.bucket, q8_normalise(x[i], inv, lo)));
    absmax[b] = m;
  }
}

void q8_dequantize(const uint8_t* codes, const float* absmax, int64_t n, int64_t block, bool is_signed, float* out,
                   int nthreads) {
  const float* value = q8_books()[is_signed ? 1 : 0].value;
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1 && n > 65536)
  for (int64_t i = 0; i < n; ++i) out[i] = value[codes[i]] * absmax[i / block];
}

bool openmp_enabled() {
#ifdef _OPENMP
  return true;
#else
  return false;
#endif
}

}  // namespace fusedopt::cpu
