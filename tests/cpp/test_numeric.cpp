// Unit tests of csrc/core/numeric.h: fp16 / bf16 conversions and stochastic rounding.
//
// References:
//   * fp16: the compiler's _Float16 conversions (g++ >= 12 on x86-64: libgcc's soft-fp or
//     F16C, IEEE round-to-nearest-even), plus an independent ldexp decoder.
//   * bf16: a reference written here from the definition (exact distances in double).
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "core/numeric.h"
#include "core/storage.h"
#include "core/vecmath.h"
#include "harness.h"

using namespace fusedopt;

namespace {

float fbits(uint32_t u) { return __builtin_bit_cast(float, u); }
uint32_t ubits(float f) { return __builtin_bit_cast(uint32_t, f); }

// Counts mismatches of a long loop and reports the first few, so a loop is one CHECK.
// ADD(m, ok, printf-args...) formats the detail only for a mismatch.
struct Mismatches {
  const char* what;
  int64_t n = 0, bad = 0;
  void fail(const std::string& detail) {
    if (++bad <= 8) std::printf("    mismatch (%s): %s\n", what, detail.c_str());
  }
};
#define ADD(m, ok, ...)                             \
  do {                                              \
    ++(m).n;                                        \
    if (!(ok)) (m).fail(fo_test::fmt(__VA_ARGS__)); \
  } while (0)
#define CHECK_NO_MISMATCH(m) CHECK_MSG((m).bad == 0 && (m).n > 0, "%s: %lld of %lld wrong", (m).what, \
                                       (long long)(m).bad, (long long)(m).n)

bool half_is_nan(uint16_t h) { return (h & 0x7fffu) > 0x7c00u; }

// ---- fp16 references -------------------------------------------------------------------
#if defined(__FLT16_MAX__)
#define HAVE_FLOAT16 1
float ref_f16_to_f32_compiler(uint16_t h) { return float(__builtin_bit_cast(_Float16, h)); }
uint16_t ref_f32_to_f16_compiler(float f) { return __builtin_bit_cast(uint16_t, static_cast<_Float16>(f)); }
#else
#define HAVE_FLOAT16 0
#endif

// Decoder from the IEEE binary16 definition.
double ref_f16_to_f64_ldexp(uint16_t h) {
  const int s = h >> 15, e = (h >> 10) & 0x1f, m = h & 0x3ff;
  double mag;
  if (e == 0x1f) {
    mag = m == 0 ? std::numeric_limits<double>::infinity() : std::numeric_limits<double>::quiet_NaN();
  } else if (e == 0) {
    mag = std::ldexp(double(m), -24);
  } else {
    mag = std::ldexp(double(1024 + m), e - 25);
  }
  return s ? -mag : mag;
}

// Encoder from the definition: the two neighbours in magnitude, exact distances, ties to even.
uint16_t ref_f32_to_f16_def(float f) {
  const uint16_t sign = std::signbit(f) ? 0x8000 : 0;
  if (std::isnan(f)) return sign | 0x7e00;
  const double a = std::fabs(double(f));
  if (a >= 65520.0) return sign | 0x7c00;  // 65504 + half an ulp (2^4): ties go to "even" 2^16, i.e. inf
  // largest half magnitude code <= a
  uint16_t lo = 0;
  for (int step = 1 << 14; step; step >>= 1)
    if (lo + step < 0x7c00 && ref_f16_to_f64_ldexp(uint16_t(lo + step)) <= a) lo = uint16_t(lo + step);
  const double vlo = ref_f16_to_f64_ldexp(lo);
  if (vlo == a) return sign | lo;
  const uint16_t hi = uint16_t(lo + 1);
  const double vhi = hi == 0x7c00 ? 65536.0 : ref_f16_to_f64_ldexp(hi);
  const double dlo = a - vlo, dhi = vhi - a;
  const uint16_t r = dlo < dhi ? lo : dhi < dlo ? hi : ((lo & 1) ? hi : lo);
  return sign | r;
}

// ---- bf16 reference -----------------------------------------------------------------------
uint16_t ref_f32_to_bf16_rne(float f) {
  const uint32_t x = ubits(f);
  const uint16_t sign = uint16_t((x >> 16) & 0x8000u);
  if (std::isnan(f)) return 0;  // callers check NaN separately
  const uint32_t mag = x & 0x7fffffffu;
  if (mag >= 0x7f800000u) return sign | 0x7f80;
  const uint16_t lo = uint16_t(mag >> 16);  // truncation of the magnitude
  const double a = std::fabs(double(f));
  const double vlo = double(fbits(uint32_t(lo) << 16));
  if (vlo == a) return sign | lo;
  // next bf16 magnitude; above the largest finite one is inf, at "distance" 2^128 - a
  const double vhi = lo + 1 == 0x7f80 ? std::ldexp(1.0, 128) : double(fbits(uint32_t(lo + 1) << 16));
  const double dlo = a - vlo, dhi = vhi - a;
  const uint16_t r = dlo < dhi ? lo : dhi < dlo ? uint16_t(lo + 1) : ((lo & 1) ? uint16_t(lo + 1) : lo);
  return sign | r;
}

// Floats around every rounding boundary of a 16-bit format whose finite non-negative codes are
// [0, ncodes) and whose decoder is `dec`: every code's value, the midpoint to the next code
// (exact in float), and the floats adjacent to both; both signs.
template <class Dec>
std::vector<float> boundary_floats(uint32_t ncodes, Dec dec, double above_last) {
  std::vector<float> v;
  v.reserve(size_t(ncodes) * 12);
  for (uint32_t c = 0; c < ncodes; ++c) {
    const double lo = dec(uint16_t(c));
    const double hi = c + 1 < ncodes ? dec(uint16_t(c + 1)) : above_last;
    const float mid = float((lo + hi) / 2);  // exact: 1 bit more than the 16-bit format's significand
    const float flo = float(lo);
    const float cand[] = {flo, std::nextafter(flo, 0.f), std::nextafter(flo, INFINITY), mid,
                          std::nextafter(mid, 0.f), std::nextafter(mid, INFINITY)};
    for (float f : cand) {
      v.push_back(f);
      v.push_back(-f);
    }
  }
  return v;
}

std::vector<float> special_floats() {
  return {0.f, -0.f, 1.f, -1.f, 0x1p-24f, 0x1p-25f, std::nextafter(0x1p-25f, 1.f), std::nextafter(0x1p-25f, 0.f),
          0x1.8p-24f, 0x1.8p-23f, 0x1p-14f, 0x1p-14f - 0x1p-25f, 0x1p-14f - 0x1p-24f, 0x1p-15f, 65504.f, 65505.f,
          65519.99f, std::nextafter(65520.f, 0.f), 65520.f, 65536.f, 1e5f, FLT_MAX, -FLT_MAX, FLT_MIN, -FLT_MIN,
          FLT_TRUE_MIN, -FLT_TRUE_MIN, 1e-30f, 1.f + 0x1p-11f, 1.f + 3 * 0x1p-11f, 2049.f, 2051.f, 1.f + 0x1p-8f,
          1.f + 3 * 0x1p-8f, 257.f, 259.f, INFINITY, -INFINITY, NAN, -NAN, fbits(0x7f800001u),
          fbits(0xff800001u), fbits(0x7fc00000u), fbits(0x7fffffffu), fbits(0x7f7fffffu), fbits(0x7f7f8000u),
          fbits(0x7f7f7fffu), fbits(0x7f7f8001u), fbits(0x7f7fc000u), fbits(0x00008000u), fbits(0x3f808000u),
          fbits(0x3f818000u), fbits(0x3f80ffffu)};
}

std::vector<float> random_floats(uint64_t seed, int n) {
  fo_test::Rng r(seed);
  std::vector<float> v;
  v.reserve(size_t(n) * 3);
  for (int i = 0; i < n; ++i) {
    v.push_back(fbits(r.u32()));  // any bit pattern (mostly far outside the fp16 range)
    // exponents around the fp16 range: 2^-27 .. 2^17, random mantissa and sign
    const uint32_t e = 100 + uint32_t(r.next() % 45);
    v.push_back(fbits((r.u32() & 0x807fffffu) | (e << 23)));
    v.push_back(float(r.normal() * 100.0));
  }
  return v;
}

// ============================== fp16 =========================================================

TEST_CASE(f16_to_f32_all_65536_patterns) {
  Mismatches ldexp_ref{"f16_to_f32 vs ldexp decoder"};
#if HAVE_FLOAT16
  Mismatches compiler_ref{"f16_to_f32 vs (float)_Float16"};
#endif
  for (uint32_t u = 0; u < 65536; ++u) {
    const uint16_t h = uint16_t(u);
    const float got = f16_to_f32(h);
    const double want = ref_f16_to_f64_ldexp(h);
    if (half_is_nan(h)) {
      // NaN stays NaN with its sign; the payload is kept (quiet bit aside)
      const bool ok = std::isnan(got) && std::signbit(got) == bool(h & 0x8000) &&
                      ((ubits(got) >> 13) & 0x1ffu) == (h & 0x1ffu);
      ADD(ldexp_ref, ok, "h=0x%04x -> 0x%08x", h, ubits(got));
#if HAVE_FLOAT16
      ADD(compiler_ref, std::isnan(ref_f16_to_f32_compiler(h)), "h=0x%04x", h);
#endif
      continue;
    }
    ADD(ldexp_ref, ubits(got) == ubits(float(want)) && double(got) == want, "h=0x%04x -> %a, want %a", h, double(got), want);
#if HAVE_FLOAT16
    const float c = ref_f16_to_f32_compiler(h);
    ADD(compiler_ref, ubits(got) == ubits(c), "h=0x%04x -> %a, compiler %a", h, double(got), double(c));
#endif
  }
  CHECK_NO_MISMATCH(ldexp_ref);
#if HAVE_FLOAT16
  CHECK_NO_MISMATCH(compiler_ref);
#endif
  // a few values by hand
  CHECK_EQ_BITS(f16_to_f32(0x3c00), 1.0f);
  CHECK_EQ_BITS(f16_to_f32(0xc000), -2.0f);
  CHECK_EQ_BITS(f16_to_f32(0x7bff), 65504.0f);
  CHECK_EQ_BITS(f16_to_f32(0x0001), 0x1p-24f);
  CHECK_EQ_BITS(f16_to_f32(0x03ff), 0x1.ff8p-15f);
  CHECK_EQ_BITS(f16_to_f32(0x0400), 0x1p-14f);
  CHECK_EQ_BITS(f16_to_f32(0x8000), -0.0f);
  CHECK_EQ_BITS(f16_to_f32(0x7c00), INFINITY);
  CHECK_EQ_BITS(f16_to_f32(0xfc00), -INFINITY);
}

// f32 -> f16 -> f32 is the identity on every non-NaN half.
TEST_CASE(f16_round_trip_all_patterns) {
  Mismatches m{"f32_to_f16_rne(f16_to_f32(h)) == h"};
  for (uint32_t u = 0; u < 65536; ++u) {
    const uint16_t h = uint16_t(u);
    const uint16_t back = f32_to_f16_rne(f16_to_f32(h));
    ADD(m, half_is_nan(h) ? half_is_nan(back) : back == h, "0x%04x -> 0x%04x", h, back);
  }
  CHECK_NO_MISMATCH(m);
}

void check_f32_to_f16(const std::vector<float>& xs, const char* what) {
#if HAVE_FLOAT16
  Mismatches compiler_ref{"f32_to_f16_rne vs (_Float16)f"};
#endif
  Mismatches def_ref{"f32_to_f16_rne vs definition"};
  for (size_t i = 0; i < xs.size(); ++i) {
    const float f = xs[i];
    const uint16_t got = f32_to_f16_rne(f);
    if (std::isnan(f)) {
      const bool ok = half_is_nan(got) && bool(got & 0x8000) == std::signbit(f);
#if HAVE_FLOAT16
      ADD(compiler_ref, ok && half_is_nan(ref_f32_to_f16_compiler(f)), "%s: nan 0x%08x -> 0x%04x", what, ubits(f),
          got);
#endif
      ADD(def_ref, ok, "%s: nan 0x%08x -> 0x%04x", what, ubits(f), got);
      continue;
    }
#if HAVE_FLOAT16
    const uint16_t c = ref_f32_to_f16_compiler(f);
    ADD(compiler_ref, got == c, "%s: %a (0x%08x) -> 0x%04x, compiler 0x%04x", what, double(f), ubits(f), got,
        c);
#endif
    // the definition-based encoder is slow (binary search): every 16th value
    if (i % 16 == 0) {
      const uint16_t d = ref_f32_to_f16_def(f);
      ADD(def_ref, got == d, "%s: %a -> 0x%04x, definition 0x%04x", what, double(f), got, d);
    }
  }
#if HAVE_FLOAT16
  CHECK_NO_MISMATCH(compiler_ref);
#endif
  CHECK_NO_MISMATCH(def_ref);
}

TEST_CASE(f32_to_f16_rne_boundaries) {
  check_f32_to_f16(special_floats(), "special");
  check_f32_to_f16(boundary_floats(0x7c00, [](uint16_t h) { return ref_f16_to_f64_ldexp(h); }, 65536.0),
                   "every half and midpoint");
  // by hand: the important edges
  CHECK_EQ_BITS(f32_to_f16_rne(65504.f), uint16_t(0x7bff));
  CHECK_EQ_BITS(f32_to_f16_rne(65519.99f), uint16_t(0x7bff));
  CHECK_EQ_BITS(f32_to_f16_rne(std::nextafter(65520.f, 0.f)), uint16_t(0x7bff));
  CHECK_EQ_BITS(f32_to_f16_rne(65520.f), uint16_t(0x7c00));
  CHECK_EQ_BITS(f32_to_f16_rne(-65520.f), uint16_t(0xfc00));
  CHECK_EQ_BITS(f32_to_f16_rne(FLT_MAX), uint16_t(0x7c00));
  CHECK_EQ_BITS(f32_to_f16_rne(INFINITY), uint16_t(0x7c00));
  CHECK_EQ_BITS(f32_to_f16_rne(-INFINITY), uint16_t(0xfc00));
  CHECK(half_is_nan(f32_to_f16_rne(NAN)));
  CHECK(half_is_nan(f32_to_f16_rne(fbits(0x7f800001u))));  // signalling NaN with a payload below fp16's
  CHECK_EQ_BITS(f32_to_f16_rne(0x1p-25f), uint16_t(0x0000));          // tie -> even (0)
  CHECK_EQ_BITS(f32_to_f16_rne(0x1.8p-24f), uint16_t(0x0002));        // tie -> even (2)
  CHECK_EQ_BITS(f32_to_f16_rne(0x1p-14f - 0x1p-25f), uint16_t(0x0400));  // tie between 0x3ff and 0x400
  CHECK_EQ_BITS(f32_to_f16_rne(1.f + 0x1p-11f), uint16_t(0x3c00));    // tie -> even
  CHECK_EQ_BITS(f32_to_f16_rne(1.f + 3 * 0x1p-11f), uint16_t(0x3c02));  // tie -> even (up)
  CHECK_EQ_BITS(f32_to_f16_rne(-0.f), uint16_t(0x8000));
  CHECK_EQ_BITS(f32_to_f16_rne(FLT_TRUE_MIN), uint16_t(0x0000));
  CHECK_EQ_BITS(f32_to_f16_rne(-1e-30f), uint16_t(0x8000));
}

TEST_CASE(f32_to_f16_rne_random) {
  check_f32_to_f16(random_floats(12345, 1 << 21), "random");
}

// ============================== bf16 =========================================================

TEST_CASE(bf16_to_f32_all_patterns) {
  Mismatches m{"bf16_to_f32 is the upper half of a float"};
  for (uint32_t u = 0; u < 65536; ++u) {
    const float got = bf16_to_f32(uint16_t(u));
    ADD(m, ubits(got) == u << 16, "0x%04x", u);
  }
  CHECK_NO_MISMATCH(m);
}

void check_f32_to_bf16(const std::vector<float>& xs, const char* what) {
  Mismatches m{"f32_to_bf16_rne vs definition"};
  for (float f : xs) {
    const uint16_t got = f32_to_bf16_rne(f);
    if (std::isnan(f)) {
      // NaN stays NaN (quiet), sign kept
      ADD(m, (got & 0x7fffu) > 0x7f80u && (got & 0x40u) && bool(got & 0x8000u) == std::signbit(f),
          "%s: nan 0x%08x -> 0x%04x", what, ubits(f), got);
      continue;
    }
    const uint16_t want = ref_f32_to_bf16_rne(f);
    ADD(m, got == want, "%s: %a (0x%08x) -> 0x%04x, want 0x%04x", what, double(f), ubits(f), got, want);
  }
  CHECK_NO_MISMATCH(m);
}

TEST_CASE(f32_to_bf16_rne_boundaries) {
  check_f32_to_bf16(special_floats(), "special");
  // every upper half with the low halves that matter: exact, below/at/above the tie, extremes
  std::vector<float> xs;
  for (uint32_t hi = 0; hi < 65536; ++hi)
    for (uint32_t lo : {0x0000u, 0x0001u, 0x7fffu, 0x8000u, 0x8001u, 0xffffu, 0x4000u, 0xc000u})
      xs.push_back(fbits(hi << 16 | lo));
  check_f32_to_bf16(xs, "every bf16 x low halves");
  CHECK_EQ_BITS(f32_to_bf16_rne(fbits(0x3f808000u)), uint16_t(0x3f80));  // tie, even below
  CHECK_EQ_BITS(f32_to_bf16_rne(fbits(0x3f818000u)), uint16_t(0x3f82));  // tie, even above
  CHECK_EQ_BITS(f32_to_bf16_rne(fbits(0x3f808001u)), uint16_t(0x3f81));
  CHECK_EQ_BITS(f32_to_bf16_rne(fbits(0x3f807fffu)), uint16_t(0x3f80));
  CHECK_EQ_BITS(f32_to_bf16_rne(fbits(0x7f7f8000u)), uint16_t(0x7f80));  // tie above the largest finite: inf
  CHECK_EQ_BITS(f32_to_bf16_rne(fbits(0x7f7f7fffu)), uint16_t(0x7f7f));
  CHECK_EQ_BITS(f32_to_bf16_rne(INFINITY), uint16_t(0x7f80));
  CHECK_EQ_BITS(f32_to_bf16_rne(-INFINITY), uint16_t(0xff80));
  CHECK_EQ_BITS(f32_to_bf16_rne(-0.f), uint16_t(0x8000));
  CHECK_EQ_BITS(f32_to_bf16_rne(fbits(0x00008000u)), uint16_t(0x0000));  // subnormal tie -> even 0
  CHECK_EQ_BITS(f32_to_bf16_rne(fbits(0x00018000u)), uint16_t(0x0002));
  CHECK_EQ_BITS(f32_to_bf16_rne(fbits(0x7f800001u)), uint16_t(0x7fc0));  // sNaN whose payload is all below bit 16
  CHECK_EQ_BITS(f32_to_bf16_rne(fbits(0xffffffffu)), uint16_t(0xffff));
}

TEST_CASE(f32_to_bf16_rne_random) {
  check_f32_to_bf16(random_floats(777, 1 << 21), "random");
}

// ============================== bf16 stochastic rounding ======================================

// Exact unbiasedness: over all 2^16 values of the random bits, f rounds up exactly
// (low 16 bits of f) times, so the mean over them is f exactly; every result is one of the
// two neighbours.
TEST_CASE(bf16_sr_exhaustive_random_bits) {
  fo_test::Rng r(99);
  std::vector<float> xs = {1.0f, -1.0f, 0.1f, -0.1f, 3.14159f, 1e-3f, -7.77e5f, 1e-38f, FLT_TRUE_MIN,
                           fbits(0x3f80ffffu), fbits(0x3f800001u), fbits(0x7f7effffu), fbits(0xff7e8000u)};
  for (int i = 0; i < 200; ++i) xs.push_back(float(r.normal() * std::ldexp(1.0, int(r.next() % 60) - 30)));
  Mismatches nb{"SR result is one of the two neighbours"};
  Mismatches cnt{"SR rounds up exactly low16 times in 2^16"};
  Mismatches mean{"SR mean over all random bits == f"};
  for (float f : xs) {
    const uint32_t x = ubits(f);
    const uint16_t down = uint16_t(x >> 16), up = uint16_t(down + 1);  // magnitude truncation and next
    int64_t nup = 0;
    double sum = 0;
    for (uint32_t rnd = 0; rnd < 65536; ++rnd) {
      // high 16 bits of rnd must be ignored
      const uint16_t b = f32_to_bf16_sr(f, rnd | (uint32_t(r.u32()) << 16));
      const bool ok = (x & 0xffffu) == 0 ? b == down : (b == down || b == up);
      if (!ok) nb.fail(fo_test::fmt("%a rnd=%u -> 0x%04x", double(f), rnd, b));
      nup += b == up;
      sum += double(bf16_to_f32(b));
    }
    ++nb.n;
    ADD(cnt, nup == int64_t(x & 0xffffu), "%a: %lld up, want %u", double(f), (long long)nup, x & 0xffffu);
    ADD(mean, sum / 65536.0 == double(f), "%a: mean %a", double(f), sum / 65536.0);
  }
  CHECK_NO_MISMATCH(nb);
  CHECK_NO_MISMATCH(cnt);
  CHECK_NO_MISMATCH(mean);
  // specials: exact bf16 values, inf and NaN are never changed by the random bits
  for (uint32_t rnd : {0u, 1u, 0x8000u, 0xffffu, 0xffffffffu}) {
    CHECK_EQ_BITS(f32_to_bf16_sr(1.0f, rnd), uint16_t(0x3f80));
    CHECK_EQ_BITS(f32_to_bf16_sr(-0.0f, rnd), uint16_t(0x8000));
    CHECK_EQ_BITS(f32_to_bf16_sr(INFINITY, rnd), uint16_t(0x7f80));
    CHECK_EQ_BITS(f32_to_bf16_sr(-INFINITY, rnd), uint16_t(0xff80));
    const uint16_t n = f32_to_bf16_sr(NAN, rnd);
    CHECK((n & 0x7fffu) > 0x7f80u);
    const uint16_t sn = f32_to_bf16_sr(fbits(0xff800001u), rnd);  // sNaN, payload below bit 16
    CHECK((sn & 0x7fffu) > 0x7f80u && (sn & 0x8000u));
  }
}

// Statistical unbiasedness with the random bits the library really uses
// (BF16SRStore: mix32(seed ^ index * golden)): the mean of N roundings of f lies within
// 6 standard deviations of f, and every result is one of the two neighbours.
TEST_CASE(bf16_sr_unbiased_with_mix32_stream) {
  const int N = 1 << 20;
  std::vector<uint16_t> buf(N);
  const float fracs[] = {0.5f, 0.1f, 0.9f, 1.0f / 3.0f, 0.01f, 0.999f};
  const float bases[] = {1.0f, -1.0f, 3.0f, 1e-5f, -250.0f};
  for (float base : bases) {
    for (float frac : fracs) {
      const float lo = bf16_to_f32(f32_to_bf16_rne(base));
      const float hi = bf16_to_f32(uint16_t(f32_to_bf16_rne(base) + 1));  // next in magnitude
      const float f = lo + frac * (hi - lo);
      const double p = (double(f) - lo) / (double(hi) - lo);  // exact probability of rounding away
      BF16SRStore<float> st{buf.data(), sr_seed(7, 3.0)};
      for (int i = 0; i < N; ++i) st.store(i, f);
      double sum = 0;
      int64_t others = 0;
      for (int i = 0; i < N; ++i) {
        const float v = st.load(i);
        others += v != lo && v != hi;
        sum += v;
      }
      const double mean = sum / N;
      const double sd = std::fabs(double(hi) - lo) * std::sqrt(p * (1 - p) / N);
      CHECK_MSG(others == 0, "base %g frac %g: %lld results not a neighbour", double(base), double(frac),
                (long long)others);
      CHECK_MSG(std::fabs(mean - double(f)) <= 6 * sd + 1e-300, "base %g frac %g: mean %.10g, f %.10g, 6 sd %.3g",
                double(base), double(frac), mean, double(f), 6 * sd);
    }
  }
  // reproducible: the same seed gives the same bits, another seed other bits
  std::vector<uint16_t> a(4096), b(4096), c(4096);
  BF16SRStore<float> sa{a.data(), 11u}, sb{b.data(), 11u}, sc{c.data(), 12u};
  for (int i = 0; i < 4096; ++i) {
    sa.store(i, 1.001f);
    sb.store(i, 1.001f);
    sc.store(i, 1.001f);
  }
  CHECK(a == b);
  CHECK(a != c);
}

// ============================== small helpers =================================================

TEST_CASE(max_nan_and_lerp) {
  CHECK_EQ_BITS(max_nan(1.0f, 2.0f), 2.0f);
  CHECK_EQ_BITS(max_nan(2.0f, 1.0f), 2.0f);
  CHECK(std::isnan(max_nan(NAN, 1.0f)));
  CHECK(std::isnan(max_nan(1.0f, NAN)));
  CHECK(std::isnan(max_nan(0.0, std::numeric_limits<double>::quiet_NaN())));
  // torch.lerp: two formulas by |w| < 0.5
  const float s = 3.0f, e = 7.0f;
  CHECK_EQ_BITS(lerp_torch(s, e, 0.25f, 0.75f, true), s + 0.25f * (e - s));
  CHECK_EQ_BITS(lerp_torch(s, e, 0.75f, 0.25f, false), e - (e - s) * 0.25f);
  CHECK_EQ_BITS(lerp_torch(s, e, 1.0f, 0.0f, false), e);  // exact end at w = 1
  // mix32 is a bijection-like hash: no collisions among the first 2^16 inputs
  std::vector<uint32_t> hs;
  for (uint32_t i = 0; i < 65536; ++i) hs.push_back(mix32(i));
  std::sort(hs.begin(), hs.end());
  CHECK(std::adjacent_find(hs.begin(), hs.end()) == hs.end());
}

// ============================== vecmath.h =====================================================
// exp_d / log_pos_d / pow_pos_d against libm (long double as the truth), exp_f against the
// correctly rounded float of the true value.

double ulps_d(double got, long double want) {
  const double w = double(want);
  const double ulp = std::nextafter(std::fabs(w), INFINITY) - std::fabs(w);
  return double(std::fabs((long double)got - want) / (long double)ulp);
}
double ulps_f(float got, long double want) {
  const float w = float(want);
  const float ulp = std::nextafter(std::fabs(w), INFINITY) - std::fabs(w);
  return double(std::fabs((long double)got - want) / (long double)ulp);
}

TEST_CASE(vecmath_exp_log_pow_double) {
  Mismatches me{"exp_d within 2 ulp"}, ml{"log_pos_d within 2 ulp"}, mp{"pow_pos_d within 64 ulp"};
  uint64_t st = 12345;
  auto next = [&] {
    st = st * 6364136223846793005ull + 1442695040888963407ull;
    return double(st >> 11) * 0x1.0p-53;
  };
  for (int i = 0; i < 200000; ++i) {
    const double t = -700.0 + 1400.0 * next();
    ADD(me, ulps_d(exp_d(t), std::exp((long double)t)) <= 2.0, "t=%.17g", t);
    const double x = std::exp(-700.0 + 1400.0 * next());
    ADD(ml, std::fabs(log_pos_d(x) - double(std::log((long double)x))) <=
                2.0 * (std::nextafter(std::fabs(std::log(x)), INFINITY) - std::fabs(std::log(x))) + 1e-300,
        "x=%.17g", x);
    const double y = 0.05 + 0.95 * next(), b = std::exp(-40.0 + 80.0 * next());
    ADD(mp, ulps_d(pow_pos_d(b, y), std::pow((long double)b, (long double)y)) <= 64.0, "b=%.17g y=%.17g", b, y);
  }
  CHECK_NO_MISMATCH(me);
  CHECK_NO_MISMATCH(ml);
  CHECK_NO_MISMATCH(mp);
  CHECK_EQ_BITS(exp_d(0.0), 1.0);
  CHECK(std::isinf(exp_d(800.0)) && exp_d(-800.0) == 0.0 && std::isnan(exp_d(NAN)));
  CHECK(pow_pos_d(0.0, 0.3) == 0.0 && std::isinf(pow_pos_d(INFINITY, 0.3)) && std::isnan(pow_pos_d(NAN, 0.3)));
}

TEST_CASE(vecmath_exp_float) {
  Mismatches m{"exp_f within 2 ulp of the true value"};
  double worst = 0.0;
  // every 101st float in [-87, 88] (about 2.6e6 of its 2.6e8 values)
  for (uint32_t u = 0; u < 0xffffff00u; u += 101) {
    const float t = fbits(u);
    if (!(t >= -87.0f && t <= 88.0f)) continue;
    const double e = ulps_f(exp_f(t), std::exp((long double)t));
    worst = e > worst ? e : worst;
    ADD(m, e <= 2.0, "t=%.9g", double(t));
  }
  std::printf("    exp_f worst error %.3f ulp\n", worst);
  CHECK_NO_MISMATCH(m);
  CHECK_EQ_BITS(exp_f(0.0f), 1.0f);
  CHECK(std::isinf(exp_f(89.0f)) && exp_f(-88.0f) == 0.0f && std::isnan(exp_f(NAN)));
  CHECK(exp_f(-INFINITY) == 0.0f && std::isinf(exp_f(INFINITY)));
  CHECK_EQ_BITS(exp_t<double>(1.0), exp_d(1.0));
  CHECK_EQ_BITS(exp_t<float>(1.0f), exp_f(1.0f));
}

}  // namespace

int main(int argc, char** argv) { return fo_test::run_all(argc, argv); }
