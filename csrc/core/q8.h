// 8-bit block-wise dynamic quantization of optimizer states (docs/algorithms.md §19), torch-free.
//
// Layout of one quantized state of a tensor with n elements and block size B:
//   codes   uint8[n]            (same shape and strides as the param; blocks follow memory order)
//   absmax  float32[ceil(n/B)]  max |x| over the finite values of each block (0 for an empty or
//                               all-zero block)
//   x[i] = value[codes[i]] * absmax[i / B]
// value[] is the signed or the unsigned dynamic map (core/q8_maps.h, generated). A state is signed
// (exp_avg, momenta: may be negative) or unsigned (second moments, sums): declared once per state
// name in core/rule_table.h ('+' marks unsigned).
//
// Encoding of one value x of a block with absmax a:
//   xn = x / a clamped to [-1, 1] (unsigned: [0, 1]); a == 0 -> xn = 0; NaN -> xn = 0;
//   +-inf never enter a (absmax ignores non-finite values) and saturate to +-1.
//   code = #{k : midpoint[k] <= xn}  (nearest map value; an exact midpoint rounds up, as torchao)
// In the optimizer (not in the standalone codec), signed states are requantized sign-preserving:
// a non-zero x whose nearest code is 0 or of the other sign moves one code toward x's sign, so a
// small momentum never collapses to 0 or flips sign (bnb's CUDA kernel does this for negatives).
//
// Two encoders give the same code for every float: q8_encode_search (branchless binary search
// over the 256 midpoints: 8 dependent lookups; used on CUDA) and q8_encode_bucket (CPU: one lookup
// in a table indexed by the top 16 bits of xn, then one comparison). The bucket table is built by
// q8_build_buckets, which checks that no bucket holds more than one midpoint (so one comparison
// suffices); tests/cpp/test_q8.cpp compares the two encoders over the whole float range. The CPU's
// AVX-512 body first tries a third, gather-free one (q8_build_segments: the maps are piecewise
// linear) and falls back to the bucket table for values within ~1/4096 step of a midpoint.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "config.h"
#include "q8_maps.h"

namespace fusedopt {

constexpr int kQ8Tile = 256;        // engines' tile; every block size is a power-of-two multiple
constexpr int kQ8MaxBlock = 4096;   // largest optimizer block size (divides kChunk)
constexpr int kQ8ZeroSigned = 127;  // code of 0.0 in the signed map (the unsigned map: 0)

// Bucket table geometry: index = clamp(|xn| bits >> 16, kQ8BucketLo, kQ8BucketHi) - kQ8BucketLo,
// plus kQ8BucketHalf for negative xn. Below 2^-25 every code is the code of 0 (both maps' smallest
// midpoint is ~1.6e-7 > 2^-23), so magnitudes under 2^-25 share the first bucket.
constexpr uint32_t kQ8BucketLo = (127u - 25u) << 7;  // bf16 bits of 2^-25
constexpr uint32_t kQ8BucketHi = 0x3F80u;            // bf16 bits of 1.0
constexpr int kQ8BucketHalf = int(kQ8BucketHi - kQ8BucketLo) + 1;
constexpr int kQ8Buckets = 2 * kQ8BucketHalf;

// One codebook as the engines see it.
struct Q8Book {
  const float* value;   // 256 sorted values
  const float* mid;     // 256 midpoints, mid[255] = +inf
  const int32_t* bucket;  // CPU: kQ8Buckets first codes (null where unused)
  bool is_signed;
  const int32_t* packed = nullptr;  // CPU SIMD encoders: see q8_build_packed
  const uint8_t* planes = nullptr;  // CPU AVX-512 VBMI decoder: byte b of value[k] at planes[256 b + k]
  const struct Q8Seg* seg = nullptr;  // CPU AVX-512 gather-free encoder: see q8_build_segments
};

#define FO_Q8_INF __builtin_huge_valf()

FO_HD uint32_t q8_bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return u;
}

FO_HD float q8_from_bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

FO_HD int q8_bucket_index(float xn) {
  const uint32_t u = q8_bits(xn);
  uint32_t a = (u & 0x7fffffffu) >> 16;
  a = a < kQ8BucketLo ? kQ8BucketLo : a;
  a = a > kQ8BucketHi ? kQ8BucketHi : a;
  return int(a - kQ8BucketLo) + ((u >> 31) ? kQ8BucketHalf : 0);
}

// xn: finite, in [-1, 1].
FO_HD int q8_encode_bucket(const float* mid, const int32_t* bucket, float xn) {
  const int k = bucket[q8_bucket_index(xn)];
  return k + (mid[k] <= xn ? 1 : 0);
}

FO_HD int q8_encode_search(const float* mid, float xn) {
  // code = #{k : mid[k] <= xn}; mid sorted, mid[255] = inf, so at most 255.
  int c = (mid[127] <= xn) ? 128 : 0;
  c += (mid[c + 63] <= xn) ? 64 : 0;
  c += (mid[c + 31] <= xn) ? 32 : 0;
  c += (mid[c + 15] <= xn) ? 16 : 0;
  c += (mid[c + 7] <= xn) ? 8 : 0;
  c += (mid[c + 3] <= xn) ? 4 : 0;
  c += (mid[c + 1] <= xn) ? 2 : 0;
  c += (mid[c] <= xn) ? 1 : 0;
  return c;
}

// Normalised value of x in a block with inverse scale inv (0 when absmax is 0): NaN -> 0, clamp.
FO_HD float q8_normalise(float x, float inv, float lo) {
  float xn = x * inv;
  xn = xn == xn ? xn : 0.0f;  // NaN (also inf * 0) -> 0
  xn = xn < lo ? lo : xn;
  xn = xn > 1.0f ? 1.0f : xn;
  return xn;
}

// Sign-preserving adjustment of a signed state's code (see the header comment).
FO_HD int q8_sign_fix(int code, float x) {
  code += (x > 0.0f && code <= kQ8ZeroSigned) ? 1 : 0;
  code -= (x < 0.0f && code >= kQ8ZeroSigned) ? 1 : 0;
  return code;
}

// Inverse scale of a block: 1/absmax, 0 for absmax 0 (every value then encodes as the 0 code).
FO_HD float q8_inv(float absmax) { return absmax > 0.0f ? 1.0f / absmax : 0.0f; }

// |x| if finite, else 0: what a block's absmax is the max of. Always +0.0 for a zero (-0.0 too):
// the CPU engine takes the max of the bit patterns, where -0.0 would beat every positive value.
FO_HD float q8_abs_finite(float x) {
  const float a = x < 0.0f ? -x : x;
  return a > 0.0f && a <= 3.402823466e38f ? a : 0.0f;  // false for +-0, inf and NaN
}

// Fills bucket[kQ8Buckets]: the first code of each bucket. Returns false if some bucket holds two
// or more midpoints (then the one-comparison encoder would be wrong; never true for the two maps).
inline bool q8_build_buckets(const float* mid, int32_t* bucket) {
  auto count_below = [&](float x) {  // #{k : mid[k] < x}
    int c = 0;
    while (c < 256 && mid[c] < x) ++c;
    return c;
  };
  auto count_upto = [&](float x) {  // #{k : mid[k] <= x}
    int c = 0;
    while (c < 256 && mid[c] <= x) ++c;
    return c;
  };
  for (int neg = 0; neg < 2; ++neg) {
    for (uint32_t a = kQ8BucketLo; a <= kQ8BucketHi; ++a) {
      // magnitudes covered: [lo_mag, hi_mag]; the first bucket also covers everything below
      const float lo_mag = a == kQ8BucketLo ? 0.0f : q8_from_bits(a << 16);
      const float hi_mag = a == kQ8BucketHi ? 1.0f : q8_from_bits((a << 16) | 0xffffu);
      const float lo = neg ? -hi_mag : lo_mag, hi = neg ? -lo_mag : hi_mag;
      const int c = count_below(lo);
      if (count_upto(hi) - c > 1) return false;
      bucket[int(a - kQ8BucketLo) + (neg ? kQ8BucketHalf : 0)] = c;
    }
  }
  return true;
}

// The bucket table with the comparison folded in, for the CPU's SIMD encoders (one gather per
// element instead of two: the bucket's first code, then its midpoint). Entry of a bucket:
//   bits 0-7: k (its first code, as in `bucket`); bit 24: the midpoint mid[k] lies in the bucket;
//   bits 8-23: then the low 16 bits of mid[k] (its high 16 bits are the bucket's own).
// Within a bucket every float shares sign and high 16 bits, so mid[k] <= xn is an integer compare
// of the low 16 bits: low(mid) <= low(xn) for a positive bucket, low(mid) >= low(xn) for a negative
// one. A midpoint above the bucket makes the comparison false for all its values (k stays). Returns
// false if some midpoint lay in the first bucket below its nominal range (xn there would not share
// its high bits; never true for the two maps). tests/cpp/test_q8.cpp and the engines' ISA test
// check that the encoders agree.
inline bool q8_build_packed(const float* mid, const int32_t* bucket, int32_t* packed) {
  for (int neg = 0; neg < 2; ++neg) {
    for (uint32_t a = kQ8BucketLo; a <= kQ8BucketHi; ++a) {
      const int idx = int(a - kQ8BucketLo) + (neg ? kQ8BucketHalf : 0);
      const int k = bucket[idx];
      int32_t e = k;
      if (k < 255) {
        const uint32_t mb = q8_bits(mid[k]);
        if ((mb >> 16) == (a | (neg ? 0x8000u : 0u))) {
          e |= int32_t(1) << 24;
          e |= int32_t(mb & 0xffffu) << 8;
        } else {
          // not in the bucket: then it must lie above all of the bucket's values (count_below)
          const float top = neg ? (a == kQ8BucketLo ? -0.0f : -q8_from_bits(a << 16))
                                : (a == kQ8BucketHi ? 1.0f : q8_from_bits((a << 16) | 0xffffu));
          if (!(mid[k] > top)) return false;
        }
      }
      packed[idx] = e;
    }
  }
  return true;
}

// ---- segment table of the CPU's AVX-512 encoder (no table gather) -------------------------------
// Both maps are piecewise linear in |x|: 0, then one run of evenly spaced values per decade
// (10^-7..10^-6, ..., 0.1..1), then 1.0. Write V[0..nv) for the map's non-negative values (the
// signed map from its code 127 on) and P[i] for the midpoint between V[i] and V[i + 1]. For y >= 0,
// r(y) = #{i : P[i] <= y}: the code of y is r (unsigned map) or 127 + r (signed), and that of -y is
// 127 - min(r, 127) (the signed map's negative side mirrors its positive one, without -1.0), except
// where y equals a midpoint exactly (there the negative side rounds the other way).
// A segment is one such run V[b..b+n): for y between its lower threshold P[b-1] and the next
// segment's, r = b + j where j counts the run's own midpoints P[b..b+n-1) <= y, which are nearly
// evenly spaced. So r = min(floor(t), b + n - 1), t = fma(y, a, c), with a and c fitted to put
// P[b+j] at t = b + j + 1 + eps. Where the fit is within eps of every midpoint (checked below,
// against the float rounding of the fma at each midpoint and at the float just below it: t is
// monotone in y), floor(t) is r unless frac(t) < 2 eps (y within about eps steps of a midpoint);
// the encoder sends such values, and exact threshold ties, to the table encoder instead. The segment
// of y is the one holding its binade's lowest value, or the next if y is at least the next's
// threshold (every binade holds at most one threshold: decades are wider than binades).
constexpr float kQ8SegEps = 1.0f / 4096.0f;
constexpr float kQ8SegTiny = 0x1p-31f;  // y is clamped up to it: binades below 2^-31 are all segment 0
struct Q8Seg {
  alignas(64) int32_t first[32];  // segment holding 2^(e - 127), at [e & 31], e = 96..127 (y's exponent field)
  alignas(64) float next[16];     // lower threshold of segment s + 1 (+inf after the last)
  alignas(64) float a[16];        // t = fma(y, a[s], c[s])
  alignas(64) float c[16];
  alignas(64) int32_t top[16];    // b + n - 1: the largest r in segment s
};

// Builds the table of a map; false if the map does not have the shape the encoder needs (then the
// engines keep the table encoder).
inline bool q8_build_segments(const float* value, const float* mid, bool is_signed, Q8Seg* seg) {
  const int z = is_signed ? kQ8ZeroSigned : 0;  // code of 0.0
  const int nv = 256 - z;
  auto V = [&](int i) { return value[z + i]; };
  auto P = [&](int i) { return mid[z + i]; };  // i < nv - 1
  auto decade = [](float v) { return v > 0.0f ? int(std::floor(std::log10(double(v)))) : -1000; };
  if (V(0) != 0.0f || V(nv - 1) != 1.0f) return false;
  int sb[17], ns = 0;
  for (int i = 0; i < nv; ++i) {
    if (i > 0 && !(V(i) > V(i - 1))) return false;
    if (i == 0 || decade(V(i)) != decade(V(i - 1))) {
      if (ns == 16) return false;
      sb[ns++] = i;
    }
  }
  sb[ns] = nv;
  auto t_of = [&](int s, float y) { return std::fmaf(y, seg->a[s], seg->c[s]); };
  for (int s = 0; s < 16; ++s) {
    seg->next[s] = FO_Q8_INF;
    seg->a[s] = 0.0f;
    seg->c[s] = 0.0f;
    seg->top[s] = 0;
  }
  for (int s = 0; s < ns; ++s) {
    const int b = sb[s], n = sb[s + 1] - b;
    seg->next[s] = s + 1 < ns ? P(sb[s + 1] - 1) : FO_Q8_INF;
    seg->top[s] = b + n - 1;
    double a = 0.0, c = b + 0.5;  // one value: t = b + 1/2 for every y
    if (n == 2) {
      a = 1.0 / (double(V(b + 1)) - double(V(b)));
      c = (b + 1) - a * double(P(b)) + kQ8SegEps;
    } else if (n > 2) {  // least squares through (P[b+j], b+j+1), j < n - 1
      double sx = 0, sy = 0, sxx = 0, sxy = 0;
      const int m = n - 1;
      for (int j = 0; j < m; ++j) {
        const double x = P(b + j), y = b + j + 1;
        sx += x, sy += y, sxx += x * x, sxy += x * y;
      }
      a = (m * sxy - sx * sy) / (m * sxx - sx * sx);
      c = (sy - a * sx) / m + kQ8SegEps;
    }
    seg->a[s] = float(a);
    seg->c[s] = float(c);
    // y from the segment's lower threshold up gives floor(t) >= b
    const float lo = s == 0 ? kQ8SegTiny : P(b - 1);
    if (!(t_of(s, lo) >= float(b))) return false;
    for (int j = 0; j + 1 < n; ++j) {
      const float m = P(b + j), below = std::nextafterf(m, 0.0f);
      const float k = float(b + j + 1);
      if (!(t_of(s, m) >= k) || !(t_of(s, below) < k + 2.0f * kQ8SegEps)) return false;
    }
  }
  // binades: the segment of each binade's lowest value; at most one threshold above it in the binade,
  // and no threshold on a power of two (a tie there would escape the encoder's tie check)
  for (int e = 96; e <= 127; ++e) {
    const float bottom = std::ldexp(1.0f, e - 127), top = e == 127 ? 1.0f : std::nextafterf(2.0f * bottom, 0.0f);
    int s0 = 0, above = 0;
    for (int s = 1; s < ns; ++s) {
      const float th = P(sb[s] - 1);
      if (th == bottom) return false;
      if (th < bottom) s0 = s;
      else if (th <= top) ++above;
    }
    if (above > 1) return false;
    seg->first[e & 31] = s0;
  }
  return true;
}

// ---- storage policy of an 8-bit state (kTile > 1: the engines walk blocks) -----------------------
// The engine, per block [b0, b0 + n) of a tensor (b0 a multiple of block, n <= block):
//   scale = pol.block_scale(b0);  x_i = pol.load(i, scale) for each i;  the rule runs;
//   pol.store_block(b0, n, new_values)  (absmax of the new values, requantize, store codes + absmax)
template <class T>
struct Q8Store {
  static constexpr int kTile = kQ8Tile;
  uint8_t* p;
  float* absmax;
  int block;  // elements per block (power of two, kQ8Tile..kQ8MaxBlock)
  int block_shift;
  Q8Book book;

  FO_HD float block_scale(int64_t b0) const { return absmax[b0 >> block_shift]; }
  FO_HD T load(int64_t i, float scale) const { return T(book.value[p[i]] * scale); }
};

}  // namespace fusedopt
