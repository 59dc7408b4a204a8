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
// The optimizer (not the standalone codec) requantizes its states by stochastic rounding
// (q8_state_code). With y = |xn| and H the map's non-negative half (unsigned: all 256 values;
// signed: value[127..255], 129 values), k the index of the largest H[k] <= y and u in [0, 1):
//   r = k + 1 if H[k] + u * (H[k+1] - H[k]) < y, else k       (y >= 1: r = the top of H)
// so the stored magnitude is y's lower or upper neighbour in the map, the upper one with probability
// (y - H[k]) / (H[k+1] - H[k]): its mean is y, and a value on a code stays there. Then:
//   signed:   r >= 1 if x != 0 (a small momentum never collapses to 0; bnb's CUDA kernel does this
//             for negatives), and the code is 127 + r, or 127 - min(r, 127) for negative x (the
//             map's negative side mirrors its positive one, without -1.0);
//   unsigned: r >= 1 in a block whose absmax is not 0 (a second moment never decodes to 0).
// u is a function of (the step, the state's list, the bits of the block's new absmax, the element's
// place in its block) (q8_state_stream, q8_block_stream, q8_uniform): a step is reproducible, the CPU
// and CUDA walks give the same codes, and so does a tensor sharded in whole blocks (FSDP2, TP:
// docs/distributed.md) as the same tensor unsharded: nothing depends on where a block lies.
// Why (README "8-bit optimizer states", measured on digits): with nearest rounding an EMA state
// b*s + (1-b)*x stops moving whenever (1-b)|x - s| is under half a code gap (for b2 = 0.999: 500
// gaps), and a second moment rounded to 0 beside a non-zero first moment gives u = m/eps. The
// stochastic rounding removes the dead band (it is unbiased), the floor the zeros; the maps and the
// meaning of a code do not change (old checkpoints load as before).
//
// Two nearest encoders give the same code for every float: q8_encode_search (branchless binary
// search over the 256 midpoints: 8 dependent lookups; used on CUDA) and q8_encode_bucket (CPU: one
// lookup in a table indexed by the top 16 bits of xn, then one comparison). The bucket table is
// built by q8_build_buckets, which checks that no bucket holds more than one midpoint (so one
// comparison suffices); tests/cpp/test_q8.cpp compares the two encoders over the whole float range.
// Both also count #{j : H[j] <= y} for the stochastic rounding (over H padded with +inf to 256
// entries). The CPU's AVX-512 body of the stochastic rounding first tries a gather-free form
// (q8_build_segments: the maps are piecewise linear) and falls back to the bucket table for values
// whose threshold comparison is within ~1/2048 of a step.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "config.h"
#include "numeric.h"
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
  // CPU, the optimizer's stochastic rounding (q8_state_code):
  const float* half = nullptr;        // H padded with +inf to 256 entries (q8_fill_half)
  const int32_t* hbucket = nullptr;   // q8_build_buckets over half: #{j : H[j] <= y} in one lookup
  const int32_t* hpacked = nullptr;   // its packed form for the SIMD bodies (q8_build_packed, y >= 0)
  const uint8_t* planes = nullptr;    // AVX-512 VBMI decoder: byte b of value[k] at planes[256 b + k]
  const struct Q8Seg* seg = nullptr;  // AVX-512 gather-free form: see q8_build_segments
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

// ---- the optimizer's requantization: stochastic rounding and the floors (see the header) --------
constexpr int q8_half_size(bool is_signed) { return is_signed ? 256 - kQ8ZeroSigned : 256; }

// H (the non-negative half of a map) padded with +inf to 256 entries, so that the nearest encoders'
// counting (q8_encode_search, q8_encode_bucket) gives #{j : H[j] <= y} for y in [0, 1).
FO_HD void q8_fill_half(const float* value, bool is_signed, float* half) {
  const int z = is_signed ? kQ8ZeroSigned : 0;
  for (int j = 0; j < 256; ++j) half[j] = j < 256 - z ? value[z + j] : FO_Q8_INF;
}

// Random stream of one 8-bit state at one step: seed = sr_seed(0, step) (core/storage.h: the step
// only, not the tensor's place in the launch), list = the state's position among the op's state lists.
FO_HD uint32_t q8_state_stream(uint32_t seed, int list) { return mix32(seed ^ (0x5bd1e995u * uint32_t(list + 1))); }

// Stream of one block: the state's stream hashed with the bits of the block's new absmax (computed
// before the codes). Blocks of equal absmax at one step share their numbers: harmless, each element's
// rounding stays unbiased.
FO_HD uint32_t q8_block_stream(uint32_t stream, uint32_t absmax_bits) { return mix32(stream ^ absmax_bits); }

// Uniform number in [0, 1) of element i (its index in its block) from its block's stream: the top 23
// bits of stream + i * 2^32 / golden ratio (mod 2^32). Over the steps of one element the stream is a
// new hash each step, so its numbers are independent and uniform; within a block they are a rotation
// sequence, spread evenly over [0, 1) (and cheap: the SIMD bodies add a constant per vector, and 1 + u
// is the float with these bits as its mantissa).
FO_HD float q8_uniform(uint32_t stream, int64_t i) {
  return float((stream + uint32_t(i) * 0x9e3779b9u) >> 9) * 0x1p-23f;
}

// y = |q8_normalise(x, inv, lo)| (+0.0 for a zero of either sign).
FO_HD float q8_state_y(float x, float inv, bool is_signed) {
  return q8_from_bits(q8_bits(q8_normalise(x, inv, is_signed ? -1.0f : 0.0f)) & 0x7fffffffu);
}

// The code of x (see the header): y = q8_state_y(x, inv, is_signed), cnt = #{j : H[j] <= y}
// (any value when y >= 1), u = q8_uniform(...). The CPU's SIMD bodies (cpu/q8_block.h) compute the
// same operations.
// Its two halves: r, the index in H of the stored magnitude (q8_state_r), then the sign and floor
// rules that make the code (q8_state_finish).
FO_HD int q8_state_r(const float* half, bool is_signed, int cnt, float y, float u) {
  int r = q8_half_size(is_signed) - 1;
  if (y < 1.0f) {
    const int k = cnt - 1;
    const float h0 = half[k];
    r = k + (h0 + u * (half[k + 1] - h0) < y ? 1 : 0);
  }
  return r;
}

FO_HD int q8_state_finish(int r, bool is_signed, float x, float inv) {
  if (is_signed) {
    r = ((x > 0.0f || x < 0.0f) && r < 1) ? 1 : r;
    return (q8_bits(x) >> 31) ? kQ8ZeroSigned - (r < kQ8ZeroSigned ? r : kQ8ZeroSigned) : kQ8ZeroSigned + r;
  }
  return (inv > 0.0f && r < 1) ? 1 : r;
}

FO_HD int q8_state_code(const float* half, bool is_signed, int cnt, float x, float y, float inv, float u) {
  return q8_state_finish(q8_state_r(half, is_signed, cnt, y, u), is_signed, x, inv);
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

// The bucket table over H (q8_fill_half, q8_build_buckets) with the comparison folded in, for the
// CPU's SIMD bodies of the stochastic rounding (one gather per element instead of two: the bucket's
// first index, then its value). They look up y >= 0 only: kQ8BucketHalf entries, entry of a bucket:
//   bits 0-7: k (#{j : H[j] below the bucket}, as in `bucket`); bit 24: H[k] lies in the bucket;
//   bits 8-23: then the low 16 bits of H[k] (its high 16 bits are the bucket's own),
// so #{j : H[j] <= y} = k + (bit 24 and low(H[k]) <= low(y)), an integer compare. An H[k] above the
// bucket counts for none of its values; the first bucket's H[0] = 0 counts for all of them (entry
// k + 1). Returns false if some H[k] lies elsewhere (never for the two maps).
inline bool q8_build_packed(const float* half, const int32_t* bucket, int32_t* packed) {
  for (uint32_t a = kQ8BucketLo; a <= kQ8BucketHi; ++a) {
    const int idx = int(a - kQ8BucketLo);
    const int k = bucket[idx];
    int32_t e = k;
    if (k < 255) {
      const uint32_t hb = q8_bits(half[k]);
      const float bottom = a == kQ8BucketLo ? 0.0f : q8_from_bits(a << 16);
      const float top = a == kQ8BucketHi ? 1.0f : q8_from_bits((a << 16) | 0xffffu);
      if ((hb >> 16) == a) {
        e |= int32_t(1) << 24;
        e |= int32_t(hb & 0xffffu) << 8;
      } else if (half[k] <= bottom) {
        e = k + 1;
      } else if (!(half[k] > top)) {
        return false;
      }
    }
    packed[idx] = e;
  }
  return true;
}

// ---- segment table of the CPU's AVX-512 stochastic rounding (no table gather) ------------------
// H (q8_fill_half) is piecewise linear: 0, then one run of evenly spaced values per decade
// (10^-7..10^-6, ..., 0.1..1), then 1.0. Cut [0, 1) into segments of intervals [H[j], H[j+1]): the
// intervals inside one decade form one segment (evenly spaced), every interval between two decades
// (or from 0, or to 1.0) is a segment of its own. In segment s (intervals j = lo..hi - 1, so
// H[lo] <= y < H[hi]) a line t = fma(y, a, c) puts every H[j] within eps of j + 2 + 2 eps, so y's
// threshold comparison of q8_state_code gives r = floor(t - (1 + u)), in [lo, hi], unless its
// fraction is under 4 eps (t - u - 2 eps within 2 eps of an integer; then the encoder takes the table
// path: bucket table and gathers). Checked
// below against the float rounding of the fma at every H[j]; between two H[j] t and the threshold
// H[k] + u (H[k+1] - H[k]) are both affine, up to a few float roundings (< 1e-4 of a step).
// The segment of y: the one holding its binade's lowest value, then kQ8SegCmp steps to the next
// while y >= next[s] (the next segment's H[lo]); binades below 2^-31 all lie in segment 0.
constexpr float kQ8SegEps = 1.0f / 4096.0f;
constexpr int kQ8SegCmp = 2;  // steps to the next segment per binade (the two maps need 2)
struct Q8Seg {
  alignas(64) int32_t first[32];  // segment holding 2^(e - 127), at [e & 31], e = 96..127 (y's exponent field)
  alignas(64) float next[16];     // H[lo] of segment s + 1 (+inf after the last)
  alignas(64) float a[16];        // t = fma(y, a[s], c[s]) ~ index + 2 + 2 eps
  alignas(64) float c[16];
  alignas(64) int32_t lo[16];     // r in [lo[s], hi[s]]
  alignas(64) int32_t hi[16];
};

// Builds the table of a half map (q8_fill_half); false if it does not have the shape the encoder
// needs (then the engines keep the table path).
inline bool q8_build_segments(const float* half, bool is_signed, Q8Seg* seg) {
  const int nh = q8_half_size(is_signed);
  auto decade = [](float v) { return v > 0.0f ? int(std::floor(std::log10(double(v)))) : -1000; };
  if (half[0] != 0.0f || half[nh - 1] != 1.0f) return false;
  for (int j = 1; j < nh; ++j)
    if (!(half[j] > half[j - 1])) return false;
  int sb[17], ns = 0;  // first interval of each segment
  for (int j = 0; j + 1 < nh; ++j) {
    const bool inside = decade(half[j]) == decade(half[j + 1]);
    const bool joins = j > 0 && inside && decade(half[j - 1]) == decade(half[j]);  // continues the run before
    if (!joins) {
      if (ns == 16) return false;
      sb[ns++] = j;
    }
  }
  sb[ns] = nh - 1;
  for (int s = 0; s < 16; ++s) {
    seg->next[s] = FO_Q8_INF;
    seg->a[s] = seg->c[s] = 0.0f;
    seg->lo[s] = seg->hi[s] = 0;
  }
  for (int s = 0; s < ns; ++s) {
    const int lo = sb[s], hi = sb[s + 1];
    seg->lo[s] = lo;
    seg->hi[s] = hi;
    seg->next[s] = s + 1 < ns ? half[hi] : FO_Q8_INF;
    // least squares through (H[j], j), j = lo..hi (two points: the line through them)
    double sx = 0, sy = 0, sxx = 0, sxy = 0;
    const int m = hi - lo + 1;
    for (int j = lo; j <= hi; ++j) {
      const double x = half[j], y = j;
      sx += x, sy += y, sxx += x * x, sxy += x * y;
    }
    const double a = (m * sxy - sx * sy) / (m * sxx - sx * sx);
    seg->a[s] = float(a);
    const double shift = 2.0 + 2.0 * double(kQ8SegEps);
    seg->c[s] = float((sy - a * sx) / m + shift);
    for (int j = lo; j <= hi; ++j) {
      const float t = std::fmaf(half[j], seg->a[s], seg->c[s]);
      if (!(std::fabs(double(t) - (j + shift)) <= kQ8SegEps)) return false;
    }
  }
  // binades: the segment of each binade's lowest value, and at most kQ8SegCmp starts above it
  for (int e = 96; e <= 127; ++e) {
    const float bottom = std::ldexp(1.0f, e - 127), top = e == 127 ? 1.0f : std::nextafterf(2.0f * bottom, 0.0f);
    int s0 = 0, above = 0;
    for (int s = 1; s < ns; ++s) {
      const float st = half[sb[s]];
      if (st <= bottom) s0 = s;
      else if (st <= top) ++above;
    }
    if (above > kQ8SegCmp) return false;
    seg->first[e & 31] = s0;
  }
  return true;
}

// The part of a segment table the per-element form below reads: what the CUDA walk carries (in its
// kernel arguments, then shared memory) for each map.
struct Q8SegLite {
  uint8_t first[32];
  float next[16], a[16], c[16];
};

inline void q8_seg_lite(const Q8Seg& sg, Q8SegLite* out) {
  for (int e = 0; e < 32; ++e) out->first[e] = uint8_t(sg.first[e]);
  for (int s = 0; s < 16; ++s) {
    out->next[s] = sg.next[s];
    out->a[s] = sg.a[s];
    out->c[s] = sg.c[s];
  }
}

// q8_state_r from a segment table (Q8Seg or Q8SegLite): one element of the CPU's AVX-512 segment form
// (cpu/q8_block.h), the same float operations. y = q8_state_y(...) in [0, 1], u = q8_uniform(...).
// Returns -1 where t's fraction is under 4 eps (the comparison is too close to its threshold for the
// line): then q8_state_r with an exact count (q8_encode_search) decides. Elsewhere it equals q8_state_r
// (tests/cpp/test_q8.cpp checks both maps over every binade and many u).
template <class Seg>
FO_HD int q8_seg_r(const Seg& sg, float y, float u) {
  uint32_t ex = q8_bits(y) >> 23;
  ex = ex < 96u ? 96u : ex;  // binades below 2^-31 (0 included) are segment 0's
  int s = int(sg.first[ex & 31u]);
  for (int q = 0; q < kQ8SegCmp; ++q) s += y >= sg.next[s & 15] ? 1 : 0;
  s &= 15;
  const float t = fmaf(y, sg.a[s], sg.c[s]) - (1.0f + u);
  const float fl = floorf(t);
  if (t - fl < 4.0f * kQ8SegEps) return -1;
  return int(fl);
}

// ---- storage policy of an 8-bit state (kTile > 1: the engines walk blocks) -----------------------
// The engine, per block [b0, b0 + n) of a tensor (b0 a multiple of block, n <= block):
//   scale = pol.block_scale(b0);  x_i = pol.load(i, scale) for each i;  the rule runs;
//   pol.store_block(b0, n, new_values)  (absmax of the new values, the codes of q8_state_code with
//   the state's stream, store codes + absmax)
template <class T>
struct Q8Store {
  static constexpr int kTile = kQ8Tile;
  uint8_t* p;
  float* absmax;
  int block;  // elements per block (power of two, kQ8Tile..kQ8MaxBlock)
  int block_shift;
  Q8Book book;
  uint32_t stream;  // q8_state_stream of this state at this step

  FO_HD float block_scale(int64_t b0) const { return absmax[b0 >> block_shift]; }
  FO_HD T load(int64_t i, float scale) const { return T(book.value[p[i]] * scale); }
};

}  // namespace fusedopt
