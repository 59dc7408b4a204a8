// Vectorisable exp / log / pow on doubles, written branch-free (per-element selects only, no
// libm calls) so the CPU engine's loop still vectorises, and usable as is in CUDA device code.
// Rules that need exp or pow on float elements (diffGrad's friction sigmoid, Padam's partial
// exponent) compute them here in double and round once to float: the float result is then
// correctly rounded in all but rare double-rounding cases (torch's Sleef u10 kernels are within
// 1 ulp), and double elements get ~1e-15 relative accuracy.
//
// Domain: exp_d for any double (overflow -> inf, results below ~1e-308 flush to 0, NaN -> NaN);
// log_pos_d for finite x > 0 (subnormal inputs included); pow_pos_d(x, y) for y > 0 and x >= 0
// (x == 0 -> 0, x == inf -> inf, NaN -> NaN).
#pragma once
#include <cstdint>

#include "config.h"
#include "numeric.h"

namespace fusedopt {

FO_HD uint64_t d2u(double d) {
#if defined(__CUDA_ARCH__)
  return uint64_t(__double_as_longlong(d));
#else
  return __builtin_bit_cast(uint64_t, d);
#endif
}
FO_HD double u2d(uint64_t u) {
#if defined(__CUDA_ARCH__)
  return __longlong_as_double((long long)u);
#else
  return __builtin_bit_cast(double, u);
#endif
}

// Selects through the bits: no branch for the vectoriser to if-convert (with -ftrapping-math GCC
// will not speculate a floating-point operation that sits in one arm of `c ? a : b`), and a
// loop-invariant `c` does not make GCC unswitch the loop.
FO_HD double bsel(bool c, double a, double b) {
  const uint64_t m = 0ull - uint64_t(c);
  return u2d((d2u(a) & m) | (d2u(b) & ~m));
}
FO_HD float bsel(bool c, float a, float b) { return self(c, a, b); }

// e^t. t = n ln2 + r, |r| <= ln2/2 (Cody-Waite split of ln2), e^r by its Taylor series to r^13
// (truncation < 5e-18), 2^n built in the exponent bits. n is read from the bits of the
// round-to-integer magic sum, so no float->int conversion is needed (AVX2 has none for int64).
FO_HD double exp_d(double t) {
  const double kMagic = 6755399441055744.0;  // 1.5 * 2^52
  const double tc = bsel(t > 709.0, 709.0, bsel(t < -708.0, -708.0, t));
  const double kd = tc * 1.4426950408889634 + kMagic;
  const double n = kd - kMagic;
  const double r = (tc - n * 6.93147180369123816490e-01) - n * 1.90821492927058770002e-10;
  double q = 1.0 / 6227020800.0;
  q = q * r + 1.0 / 479001600.0;
  q = q * r + 1.0 / 39916800.0;
  q = q * r + 1.0 / 3628800.0;
  q = q * r + 1.0 / 362880.0;
  q = q * r + 1.0 / 40320.0;
  q = q * r + 1.0 / 5040.0;
  q = q * r + 1.0 / 720.0;
  q = q * r + 1.0 / 120.0;
  q = q * r + 1.0 / 24.0;
  q = q * r + 1.0 / 6.0;
  q = q * r + 0.5;
  q = q * r + 1.0;
  q = q * r + 1.0;
  const uint64_t scale = (d2u(kd) - d2u(kMagic) + 1023u) << 52;  // 2^n, n in [-1022, 1023]
  const double v = q * u2d(scale);
  const double big = bsel(t > 709.78, u2d(0x7ff0000000000000ull), v);
  const double out = bsel(t < -708.39, 0.0, big);
  return bsel(t != t, t, out);
}

// ln x for finite x > 0: x = 2^k f, f in [sqrt(1/2), sqrt(2)), ln f = 2 atanh(s), s = (f-1)/(f+1),
// |s| < 0.1716, the odd series to s^23 (truncation < 1e-18 relative).
FO_HD double log_pos_d(double x) {
  const bool sub = x < 2.2250738585072014e-308;
  const double xs = bsel(sub, x * 18014398509481984.0, x);  // * 2^54
  const uint64_t u = d2u(xs);
  // exponent field as a double without an int->float conversion: 2^52 + e, minus (2^52 + 1023)
  const double ebits = u2d((u >> 52) | 0x4330000000000000ull) - 4503599627371519.0;
  const double f0 = u2d((u & 0x000fffffffffffffull) | 0x3ff0000000000000ull);  // [1, 2)
  const bool hi = f0 > 1.4142135623730951;
  const double f = bsel(hi, f0 * 0.5, f0);
  const double k = ebits + bsel(hi, 1.0, 0.0) - bsel(sub, 54.0, 0.0);
  const double s = (f - 1.0) / (f + 1.0);
  const double z = s * s;
  double q = 1.0 / 23.0;
  q = q * z + 1.0 / 21.0;
  q = q * z + 1.0 / 19.0;
  q = q * z + 1.0 / 17.0;
  q = q * z + 1.0 / 15.0;
  q = q * z + 1.0 / 13.0;
  q = q * z + 1.0 / 11.0;
  q = q * z + 1.0 / 9.0;
  q = q * z + 1.0 / 7.0;
  q = q * z + 1.0 / 5.0;
  q = q * z + 1.0 / 3.0;
  const double lnf = 2.0 * s + 2.0 * s * (z * q);
  return k * 6.93147180369123816490e-01 + (k * 1.90821492927058770002e-10 + lnf);
}

// e^t in float arithmetic, for float elements where a result within ~2 ulp is enough (diffGrad's
// friction sigmoid: it scales the step, never a state). Same scheme as exp_d with float
// constants: t = n ln2 + r (two-part ln2, the high part exact in 16 bits), e^r by its Taylor
// series to r^7 (truncation < 6e-9), 2^n in the exponent bits. Twice the SIMD lanes of exp_d.
// Domain: t > 88.72 -> inf; t < -87.33 -> 0 (no subnormal results); NaN -> NaN.
FO_HD float exp_f(float t) {
  const float kMagic = 12582912.0f;  // 1.5 * 2^23
  const float tc = bsel(t > 88.0f, 88.0f, bsel(t < -87.0f, -87.0f, t));
  const float kd = tc * 1.44269502f + kMagic;
  const float n = kd - kMagic;
  const float r = (tc - n * 0.693145751953125f) - n * 1.428606765330187e-06f;
  float q = 1.0f / 5040.0f;
  q = q * r + 1.0f / 720.0f;
  q = q * r + 1.0f / 120.0f;
  q = q * r + 1.0f / 24.0f;
  q = q * r + 1.0f / 6.0f;
  q = q * r + 0.5f;
  q = q * r + 1.0f;
  q = q * r + 1.0f;
  const uint32_t scale = (f2u(kd) - f2u(kMagic) + 127u) << 23;  // 2^n, n in [-126, 127]
  const float v = q * u2f(scale);
  const float big = bsel(t > 88.72f, u2f(0x7f800000u), v);
  const float out = bsel(t < -87.33f, 0.0f, big);
  return bsel(t != t, t, out);
}

// e^t at the element type: exp_f for float, exp_d for double.
template <class T>
FO_HD T exp_t(T t) {
  if constexpr (sizeof(T) == 4) {
    return exp_f(t);
  } else {
    return exp_d(t);
  }
}

// x^y for y > 0 (see the domain note above).
FO_HD double pow_pos_d(double x, double y) {
  const bool ok = (x > 0.0) & (x < u2d(0x7ff0000000000000ull));
  const double v = exp_d(y * log_pos_d(bsel(ok, x, 1.0)));
  const double edge = bsel(x == 0.0, 0.0, x);  // 0 -> 0, inf -> inf, NaN -> NaN (negative x: not used)
  return bsel(ok, v, edge);
}

}  // namespace fusedopt
