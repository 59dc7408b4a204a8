// 8-bit block-wise dynamic quantization of optimizer states (ALGORITHMS.md §19), torch-free.
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
// suffices); tests/cpp/test_q8.cpp compares the two encoders over the whole float range.
#pragma once
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
