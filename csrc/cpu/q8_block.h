// Requantization of one block of new fp32 state values into 8-bit codes (core/q8.h), CPU engines.
// torch-free.
//
// q8_block_decode: the block's n codes to fp32 values (value[code] * absmax, one rounding), into a
// buffer the rule loop then reads and overwrites with the new values: the table lookup is a gather
// GCC does not emit itself for this target (it builds the vector from scalar loads instead).
// Then two steps over the block's n new values v[0..n):
//   q8_block_absmax: max |v| over the finite values (the block's new absmax);
//   q8_block_encode: codes of v under inverse scale inv (q8_normalise, q8_encode_bucket and, for a
//                    signed map, q8_sign_fix).
// Each has an AVX-512 and an AVX2 body, used where the including TU is compiled for that ISA
// (kernels_avx512.cpp / kernels_avx2.cpp define FO_ISA_AVX512 / FO_ISA_AVX2: g++'s
// `#pragma GCC target` in kernels_impl.h does not define __AVX512F__ / __AVX2__), and the scalar one
// (core/q8.h's functions) otherwise and for the tails. GCC does not vectorise the scalar loops (the
// table lookups are gathers). Every body computes the same IEEE operations as the scalar code, so
// the codes are bit-identical on every ISA:
//   xn = x * inv (one rounding, no FMA);  NaN -> 0;  xn < lo ? lo : xn;  xn > 1 ? 1 : xn
// (max_ps(lo, xn) and min_ps(1, xn) return their second operand on ties, -0.0 included, which is
// what the scalar selects keep); the SIMD encoders gather one packed entry per element (core/q8.h
// q8_build_packed: the bucket's first code and its midpoint's low bits) and compare as integers.
// Where the book has a segment table (core/q8.h q8_build_segments), the AVX-512 encoder computes
// the code from a per-decade linear fit with register lookups instead (~2.5x faster on Zen 4: the
// gather dominated) and sends each 16-value vector holding a value near a midpoint to the table
// body; every float at scales 1, 0.37 and 0 was checked to give the table's code (once, outside
// the tree: 2^32 patterns x both maps), tests/cpp/test_q8_simd.cpp checks a dense subset.
#pragma once
#include <cstdint>

#include "../core/q8.h"

#if defined(FO_ISA_AVX512) || defined(FO_ISA_AVX2)
#include <immintrin.h>
#endif

// Per-ISA namespace (FO_ISA, see kernels_impl.h): each TU's bodies differ, so they must not merge.
namespace fusedopt::cpu::FO_ISA {

#if defined(FO_ISA_AVX512)
// AVX-512 VBMI decoder of 64 codes per iteration (n a multiple of 64), where the CPU has VBMI (checked
// at run time: the AVX-512 kernels do not require it). Each byte of the 256 fp32 values is a 256-entry
// byte table (Q8Book::planes) looked up with two vpermi2b (codes 0-127, 128-255, chosen by the code's
// top bit); the four byte planes are interleaved into floats by unpacks. The unpacks work within
// 128-bit lanes, so the codes are first permuted (a transpose of 4 x 4 groups of 4 bytes, its own
// inverse) so that the floats come out in order. Bit-identical to value[code] * scale.
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vbmi,avx2,fma,f16c")))
inline void q8_decode_vbmi(const uint8_t* codes, int n, float scale, const uint8_t* planes, float* out) {
  alignas(64) uint8_t perm[64];
  for (int l = 0; l < 4; ++l)
    for (int g = 0; g < 4; ++g)
      for (int j = 0; j < 4; ++j) perm[16 * l + 4 * g + j] = uint8_t(16 * g + 4 * l + j);
  const __m512i vperm = _mm512_load_si512(perm);
  __m512i lo[4][2], hi[4][2];
  for (int b = 0; b < 4; ++b) {
    lo[b][0] = _mm512_loadu_si512(planes + 256 * b);
    lo[b][1] = _mm512_loadu_si512(planes + 256 * b + 64);
    hi[b][0] = _mm512_loadu_si512(planes + 256 * b + 128);
    hi[b][1] = _mm512_loadu_si512(planes + 256 * b + 192);
  }
  const __m512 vs = _mm512_set1_ps(scale);
  for (int j = 0; j + 64 <= n; j += 64) {
    const __m512i c = _mm512_permutexvar_epi8(vperm, _mm512_loadu_si512(codes + j));
    const __mmask64 top = _mm512_movepi8_mask(c);
    __m512i p[4];
    for (int b = 0; b < 4; ++b)
      p[b] = _mm512_mask_blend_epi8(top, _mm512_permutex2var_epi8(lo[b][0], c, lo[b][1]),
                                    _mm512_permutex2var_epi8(hi[b][0], c, hi[b][1]));
    const __m512i a_lo = _mm512_unpacklo_epi8(p[0], p[1]), a_hi = _mm512_unpackhi_epi8(p[0], p[1]);
    const __m512i b_lo = _mm512_unpacklo_epi8(p[2], p[3]), b_hi = _mm512_unpackhi_epi8(p[2], p[3]);
    _mm512_storeu_ps(out + j, _mm512_mul_ps(_mm512_castsi512_ps(_mm512_unpacklo_epi16(a_lo, b_lo)), vs));
    _mm512_storeu_ps(out + j + 16, _mm512_mul_ps(_mm512_castsi512_ps(_mm512_unpackhi_epi16(a_lo, b_lo)), vs));
    _mm512_storeu_ps(out + j + 32, _mm512_mul_ps(_mm512_castsi512_ps(_mm512_unpacklo_epi16(a_hi, b_hi)), vs));
    _mm512_storeu_ps(out + j + 48, _mm512_mul_ps(_mm512_castsi512_ps(_mm512_unpackhi_epi16(a_hi, b_hi)), vs));
  }
}

inline bool q8_cpu_has_vbmi() {
  static const bool has = __builtin_cpu_supports("avx512vbmi");
  return has;
}
#endif

inline void q8_block_decode(const uint8_t* codes, int n, float scale, const Q8Book& book, float* out) {
  const float* value = book.value;
  int j = 0;
#if defined(FO_ISA_AVX512)
  if (book.planes != nullptr && n >= 64 && q8_cpu_has_vbmi()) {
    j = n & ~63;
    q8_decode_vbmi(codes, j, scale, book.planes, out);
  }
  {
    const __m512 vs = _mm512_set1_ps(scale);
    for (; j + 16 <= n; j += 16) {
      const __m512i idx = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + j)));
      _mm512_storeu_ps(out + j, _mm512_mul_ps(_mm512_i32gather_ps(idx, value, 4), vs));
    }
  }
#elif defined(FO_ISA_AVX2)
  {
    const __m256 vs = _mm256_set1_ps(scale);
    for (; j + 8 <= n; j += 8) {
      const __m256i idx = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes + j)));
      _mm256_storeu_ps(out + j, _mm256_mul_ps(_mm256_i32gather_ps(value, idx, 4), vs));
    }
  }
#endif
  for (; j < n; ++j) out[j] = value[codes[j]] * scale;
}

// Bit pattern of the block's absmax: for non-negative floats the bit patterns order like the
// values, so an integer max gives the float max exactly. Non-finite values count as 0.
inline uint32_t q8_block_absmax(const float* v, int n) {
  uint32_t m = 0;
  int j = 0;
#if defined(FO_ISA_AVX512)
  {
    const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff), max_finite = _mm512_set1_epi32(0x7f7fffff);
    __m512i vm = _mm512_setzero_si512();
    for (; j < n; j += 16) {
      const __mmask16 live = n - j >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - j)) - 1u);
      const __m512i a = _mm512_and_si512(_mm512_castps_si512(_mm512_maskz_loadu_ps(live, v + j)), abs_mask);
      vm = _mm512_mask_max_epu32(vm, _mm512_cmple_epu32_mask(a, max_finite), vm, a);
    }
    m = uint32_t(_mm512_reduce_max_epu32(vm));
  }
#elif defined(FO_ISA_AVX2)
  {
    const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff), max_finite = _mm256_set1_epi32(0x7f7fffff);
    __m256i vm = _mm256_setzero_si256();
    for (; j + 8 <= n; j += 8) {
      const __m256i a = _mm256_and_si256(_mm256_castps_si256(_mm256_loadu_ps(v + j)), abs_mask);
      // a <= 0x7fffffff, so the signed compare orders it correctly
      vm = _mm256_max_epi32(vm, _mm256_andnot_si256(_mm256_cmpgt_epi32(a, max_finite), a));
    }
    __m128i h = _mm_max_epi32(_mm256_castsi256_si128(vm), _mm256_extracti128_si256(vm, 1));
    h = _mm_max_epi32(h, _mm_shuffle_epi32(h, 0x4e));
    h = _mm_max_epi32(h, _mm_shuffle_epi32(h, 0xb1));
    m = uint32_t(_mm_cvtsi128_si32(h));
  }
#endif
  for (; j < n; ++j) {
    const uint32_t a = q8_bits(q8_abs_finite(v[j]));
    m = a > m ? a : m;
  }
  return m;
}

template <bool kSigned>
inline void q8_block_encode(const float* v, int n, float inv, const Q8Book& book, uint8_t* out) {
  const float* mid = book.mid;
  const int32_t* bucket = book.bucket;
  const int32_t* packed = book.packed;  // the SIMD bodies' table (unused by the scalar build)
  (void)packed;
  constexpr float lo = kSigned ? -1.0f : 0.0f;
  int j = 0;
#if defined(FO_ISA_AVX512)
  {
    const __m512 vinv = _mm512_set1_ps(inv), vlo = _mm512_set1_ps(lo), one = _mm512_set1_ps(1.0f);
    const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff), one_i = _mm512_set1_epi32(1);
    const __m512i blo = _mm512_set1_epi32(int(kQ8BucketLo)), bhi = _mm512_set1_epi32(int(kQ8BucketHi));
    const __m512i half = _mm512_set1_epi32(kQ8BucketHalf), zero_code = _mm512_set1_epi32(kQ8ZeroSigned);
    const __m512i byte_mask = _mm512_set1_epi32(0xff), low_mask = _mm512_set1_epi32(0xffff);
    const __m512i has_bit = _mm512_set1_epi32(1 << 24);
    // the table encoder: 16 values (live lanes) at j
    auto table16 = [&](int j, __mmask16 live) {
      const __m512 x = _mm512_maskz_loadu_ps(live, v + j);
      __m512 xn = _mm512_mul_ps(x, vinv);
      xn = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(xn, xn, _CMP_ORD_Q), xn);  // NaN -> 0
      xn = _mm512_min_ps(one, _mm512_max_ps(vlo, xn));
      const __m512i u = _mm512_castps_si512(xn);
      __m512i a = _mm512_srli_epi32(_mm512_and_si512(u, abs_mask), 16);
      a = _mm512_min_epu32(_mm512_max_epu32(a, blo), bhi);
      const __m512i idx = _mm512_add_epi32(_mm512_sub_epi32(a, blo), _mm512_and_si512(_mm512_srai_epi32(u, 31), half));
      // one gather of the packed entry (core/q8.h q8_build_packed): k, and the in-bucket midpoint's
      // low bits compared with xn's as integers (reversed in a negative bucket)
      const __m512i e = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), live, idx, packed, 4);
      const __m512i k = _mm512_and_si512(e, byte_mask);
      const __m512i thr = _mm512_and_si512(_mm512_srli_epi32(e, 8), low_mask);
      const __m512i low = _mm512_and_si512(u, low_mask);
      const __mmask16 neg = _mm512_movepi32_mask(u);
      const __mmask16 inc = _mm512_test_epi32_mask(e, has_bit) &
                            ((_mm512_cmple_epu32_mask(thr, low) & ~neg) | (_mm512_cmpge_epu32_mask(thr, low) & neg));
      __m512i c = _mm512_mask_add_epi32(k, inc, k, one_i);
      if constexpr (kSigned) {
        const __mmask16 pos = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GT_OQ);
        c = _mm512_mask_add_epi32(c, pos & _mm512_cmple_epi32_mask(c, zero_code), c, one_i);
        const __mmask16 neg = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ);
        c = _mm512_mask_sub_epi32(c, neg & _mm512_cmpge_epi32_mask(c, zero_code), c, one_i);
      }
      _mm512_mask_cvtepi32_storeu_epi8(out + j, live, c);
    };
    if (book.seg != nullptr) {
      // the segment encoder (core/q8.h q8_build_segments): register lookups only; a vector with a
      // value near a midpoint (or on a threshold) goes to the table encoder
      const Q8Seg& sg = *book.seg;
      const __m512i first_lo = _mm512_load_si512(sg.first), first_hi = _mm512_load_si512(sg.first + 16);
      const __m512 next = _mm512_load_ps(sg.next), va = _mm512_load_ps(sg.a), vc = _mm512_load_ps(sg.c);
      const __m512i top = _mm512_load_si512(sg.top), zero_i = _mm512_setzero_si512();
      const __m512 tiny = _mm512_set1_ps(kQ8SegTiny), two_eps = _mm512_set1_ps(2.0f * kQ8SegEps);
      for (; j + 16 <= n; j += 16) {
        const __m512 x = _mm512_loadu_ps(v + j);
        __m512 y = _mm512_mul_ps(x, vinv);
        if constexpr (kSigned) y = _mm512_abs_ps(y);
        y = _mm512_min_ps(_mm512_max_ps(y, tiny), one);  // max_ps returns its second operand for NaN
        __m512i s = _mm512_permutex2var_epi32(first_lo, _mm512_srli_epi32(_mm512_castps_si512(y), 23), first_hi);
        const __m512 th = _mm512_permutexvar_ps(s, next);
        s = _mm512_mask_add_epi32(s, _mm512_cmp_ps_mask(y, th, _CMP_GE_OQ), s, one_i);
        const __m512 t = _mm512_fmadd_ps(y, _mm512_permutexvar_ps(s, va), _mm512_permutexvar_ps(s, vc));
        __mmask16 near = _mm512_cmp_ps_mask(_mm512_reduce_ps(t, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC), two_eps,
                                            _CMP_LT_OQ);
        __m512i c = _mm512_min_epi32(_mm512_cvttps_epi32(t), _mm512_permutexvar_epi32(s, top));
        if constexpr (kSigned) {
          near |= _mm512_cmp_ps_mask(y, th, _CMP_EQ_OQ);  // a tie on a threshold: -y rounds the other way
          // sign-preserving: a non-zero x never takes the code of 0 (r >= 1); -y gets 127 - r
          c = _mm512_mask_max_epi32(c, _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_NEQ_OQ), c, one_i);
          c = _mm512_mask_sub_epi32(_mm512_add_epi32(c, zero_code), _mm512_movepi32_mask(_mm512_castps_si512(x)),
                                    zero_code, c);
          c = _mm512_max_epi32(c, zero_i);
        }
        if (near) {
          table16(j, __mmask16(0xffff));
        } else {
          _mm_storeu_si128(reinterpret_cast<__m128i*>(out + j), _mm512_cvtepi32_epi8(c));
        }
      }
    }
    for (; j < n; j += 16) table16(j, n - j >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - j)) - 1u));
  }
#elif defined(FO_ISA_AVX2)
  {
    const __m256 vinv = _mm256_set1_ps(inv), vlo = _mm256_set1_ps(lo), one = _mm256_set1_ps(1.0f);
    const __m256 zero = _mm256_setzero_ps();
    const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff);
    const __m256i blo = _mm256_set1_epi32(int(kQ8BucketLo)), bhi = _mm256_set1_epi32(int(kQ8BucketHi));
    const __m256i half = _mm256_set1_epi32(kQ8BucketHalf);
    const __m256i byte_mask = _mm256_set1_epi32(0xff), low_mask = _mm256_set1_epi32(0xffff);
    const __m256i has_bit = _mm256_set1_epi32(1 << 24);
    const __m256i zero_code_m1 = _mm256_set1_epi32(kQ8ZeroSigned - 1);
    const __m256i zero_code_p1 = _mm256_set1_epi32(kQ8ZeroSigned + 1);
    for (; j + 8 <= n; j += 8) {
      const __m256 x = _mm256_loadu_ps(v + j);
      __m256 xn = _mm256_mul_ps(x, vinv);
      xn = _mm256_and_ps(_mm256_cmp_ps(xn, xn, _CMP_ORD_Q), xn);  // NaN -> 0
      xn = _mm256_min_ps(one, _mm256_max_ps(vlo, xn));
      const __m256i u = _mm256_castps_si256(xn);
      __m256i a = _mm256_srli_epi32(_mm256_and_si256(u, abs_mask), 16);
      a = _mm256_min_epu32(_mm256_max_epu32(a, blo), bhi);
      const __m256i idx = _mm256_add_epi32(_mm256_sub_epi32(a, blo), _mm256_and_si256(_mm256_srai_epi32(u, 31), half));
      // one gather of the packed entry (see the AVX-512 body); thr and low are < 2^16, so the
      // signed compares order them correctly
      const __m256i e = _mm256_i32gather_epi32(packed, idx, 4);
      const __m256i k = _mm256_and_si256(e, byte_mask);
      const __m256i thr = _mm256_and_si256(_mm256_srli_epi32(e, 8), low_mask);
      const __m256i low = _mm256_and_si256(u, low_mask);
      const __m256i neg = _mm256_srai_epi32(u, 31);  // all ones in a negative bucket
      const __m256i has = _mm256_cmpeq_epi32(_mm256_and_si256(e, has_bit), has_bit);
      const __m256i pos_ok = _mm256_andnot_si256(neg, _mm256_andnot_si256(_mm256_cmpgt_epi32(thr, low), has));
      const __m256i neg_ok = _mm256_and_si256(neg, _mm256_andnot_si256(_mm256_cmpgt_epi32(low, thr), has));
      // compare masks are all ones (-1) where true: c = k + 1 is k - mask
      __m256i c = _mm256_sub_epi32(k, _mm256_or_si256(pos_ok, neg_ok));
      if constexpr (kSigned) {
        const __m256i pos = _mm256_and_si256(_mm256_castps_si256(_mm256_cmp_ps(x, zero, _CMP_GT_OQ)),
                                             _mm256_cmpgt_epi32(zero_code_p1, c));  // c <= 127
        c = _mm256_sub_epi32(c, pos);
        const __m256i neg = _mm256_and_si256(_mm256_castps_si256(_mm256_cmp_ps(x, zero, _CMP_LT_OQ)),
                                             _mm256_cmpgt_epi32(c, zero_code_m1));  // c >= 127
        c = _mm256_add_epi32(c, neg);
      }
      // 0 <= c <= 255: both saturating packs are exact
      const __m128i c16 = _mm_packs_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256(c, 1));
      _mm_storel_epi64(reinterpret_cast<__m128i*>(out + j), _mm_packus_epi16(c16, c16));
    }
  }
#endif
  for (; j < n; ++j) {
    const int c = q8_encode_bucket(mid, bucket, q8_normalise(v[j], inv, lo));
    out[j] = uint8_t(kSigned ? q8_sign_fix(c, v[j]) : c);
  }
}

}  // namespace fusedopt::cpu::FO_ISA
