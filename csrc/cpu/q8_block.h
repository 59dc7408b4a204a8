// Requantization of one block of new fp32 state values into 8-bit codes (core/q8.h), CPU engines.
// torch-free.
//
// q8_block_decode: the block's n codes to fp32 values (value[code] * absmax, one rounding), into a
// buffer the rule loop then reads and overwrites with the new values: the table lookup is a gather
// GCC does not emit itself for this target (it builds the vector from scalar loads instead).
// Then two steps over the block's n new values v[0..n):
//   q8_block_absmax:       max |v| over the finite values (the block's new absmax);
//   q8_block_encode_state: codes of v under inverse scale inv: the optimizer's stochastic rounding
//                          (core/q8.h q8_state_code), with the state's random stream.
// Each has an AVX-512 and an AVX2 body, used where the including TU is compiled for that ISA
// (kernels_avx512.cpp / kernels_avx2.cpp define FO_ISA_AVX512 / FO_ISA_AVX2: g++'s
// `#pragma GCC target` in kernels_impl.h does not define __AVX512F__ / __AVX2__), and the scalar one
// (core/q8.h's functions) otherwise and for the tails. GCC does not vectorise the scalar loops (the
// table lookups are gathers). Every body computes the same IEEE operations as the scalar code, so
// the codes are bit-identical on every ISA:
//   xn = x * inv (one rounding, no FMA);  NaN -> 0;  xn < lo ? lo : xn;  xn > 1 ? 1 : xn;  y = |xn|
//   u = float((stream + i * golden) >> 9) * 2^-23;  threshold H[k] + u * (H[k+1] - H[k])  (mul, add)
// (max_ps(lo, xn) and min_ps(1, xn) return their second operand on ties, -0.0 included, which is
// what the scalar selects keep); the table bodies gather one packed entry per element (core/q8.h
// q8_build_packed over H: the bucket's first index and its value's low bits, compared as integers)
// for k, then H[k] and H[k+1]. Where the book has a segment table (core/q8.h q8_build_segments),
// the AVX-512 body computes floor(t - (1 + u)) from a per-segment linear fit with register lookups
// instead (no gather) and sends each 16-value vector holding a value whose t - u lies within 2 eps of
// an integer to the table body (tests/cpp/test_q8_simd.cpp checks both against the scalar code).
#pragma once
#include <cstdint>

#include "../core/q8.h"
#include "api.h"

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
#define FO_Q8_VBMI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vbmi,avx2,fma,f16c")))
struct Q8Vbmi {  // the byte planes in registers, and the code permutation
  __m512i perm, lo[4][2], hi[4][2];
};

// The code permutation: byte 16 l + 4 g + j takes byte 16 g + 4 l + j.
alignas(64) inline constexpr uint8_t kQ8VbmiPerm[64] = {
    0,  1,  2,  3,  16, 17, 18, 19, 32, 33, 34, 35, 48, 49, 50, 51, 4,  5,  6,  7,  20, 21,
    22, 23, 36, 37, 38, 39, 52, 53, 54, 55, 8,  9,  10, 11, 24, 25, 26, 27, 40, 41, 42, 43,
    56, 57, 58, 59, 12, 13, 14, 15, 28, 29, 30, 31, 44, 45, 46, 47, 60, 61, 62, 63};

FO_Q8_VBMI inline Q8Vbmi q8_vbmi_load(const uint8_t* planes) {
  Q8Vbmi t;
  t.perm = _mm512_load_si512(kQ8VbmiPerm);
  for (int b = 0; b < 4; ++b) {
    t.lo[b][0] = _mm512_loadu_si512(planes + 256 * b);
    t.lo[b][1] = _mm512_loadu_si512(planes + 256 * b + 64);
    t.hi[b][0] = _mm512_loadu_si512(planes + 256 * b + 128);
    t.hi[b][1] = _mm512_loadu_si512(planes + 256 * b + 192);
  }
  return t;
}

// value[codes[k]] for the 64 codes of a vector, in order: out[q] holds codes 16q .. 16q + 15.
FO_Q8_VBMI inline void q8_vbmi_decode64(const Q8Vbmi& t, __m512i codes, __m512 out[4]) {
  const __m512i c = _mm512_permutexvar_epi8(t.perm, codes);
  const __mmask64 top = _mm512_movepi8_mask(c);
  __m512i p[4];
  for (int b = 0; b < 4; ++b)
    p[b] = _mm512_mask_blend_epi8(top, _mm512_permutex2var_epi8(t.lo[b][0], c, t.lo[b][1]),
                                  _mm512_permutex2var_epi8(t.hi[b][0], c, t.hi[b][1]));
  const __m512i a_lo = _mm512_unpacklo_epi8(p[0], p[1]), a_hi = _mm512_unpackhi_epi8(p[0], p[1]);
  const __m512i b_lo = _mm512_unpacklo_epi8(p[2], p[3]), b_hi = _mm512_unpackhi_epi8(p[2], p[3]);
  out[0] = _mm512_castsi512_ps(_mm512_unpacklo_epi16(a_lo, b_lo));
  out[1] = _mm512_castsi512_ps(_mm512_unpackhi_epi16(a_lo, b_lo));
  out[2] = _mm512_castsi512_ps(_mm512_unpacklo_epi16(a_hi, b_hi));
  out[3] = _mm512_castsi512_ps(_mm512_unpackhi_epi16(a_hi, b_hi));
}

FO_Q8_VBMI inline void q8_decode_vbmi(const uint8_t* codes, int n, float scale, const uint8_t* planes, float* out) {
  const Q8Vbmi t = q8_vbmi_load(planes);
  const __m512 vs = _mm512_set1_ps(scale);
  for (int j = 0; j + 64 <= n; j += 64) {
    __m512 x[4];
    q8_vbmi_decode64(t, _mm512_loadu_si512(codes + j), x);
    for (int q = 0; q < 4; ++q) _mm512_storeu_ps(out + j + 16 * q, _mm512_mul_ps(x[q], vs));
  }
}

inline bool q8_cpu_has_vbmi() { return fusedopt::cpu::q8_vbmi_enabled(); }  // api.h (FUSEDOPT_Q8_DECODER)
#endif

inline void q8_block_decode(const uint8_t* codes, int n, float scale, const Q8Book& book, float* out) {
  const float* value = book.value;
  int j = 0;
#if defined(FO_ISA_AVX512)
  if (book.planes != nullptr && n >= 64 && q8_cpu_has_vbmi()) {
    j = n & ~63;
    q8_decode_vbmi(codes, j, scale, book.planes, out);
  }
  if (j + 16 <= n) {
    // AVX-512F without VBMI: the 256 values in 16 registers; per 16 codes, eight two-register permutes
    // (vpermi2ps: the code's low 5 bits) and a blend tree on bits 5, 6 and 7 pick value[code] (no
    // gather: on the 2-core EPYC, 8-bit AdamW took 94-99 ms per GPT-2-small step with a gather here,
    // 69 ms with these permutes). Bit-identical.
    __m512 tab[16];
    for (int q = 0; q < 16; ++q) tab[q] = _mm512_loadu_ps(value + 16 * q);
    const __m512 vs = _mm512_set1_ps(scale);
    const __m512i b5 = _mm512_set1_epi32(32), b6 = _mm512_set1_epi32(64), b7 = _mm512_set1_epi32(128);
    for (; j + 16 <= n; j += 16) {
      const __m512i idx = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + j)));
      __m512 c[8];
      for (int q = 0; q < 8; ++q) c[q] = _mm512_permutex2var_ps(tab[2 * q], idx, tab[2 * q + 1]);
      const __mmask16 m5 = _mm512_test_epi32_mask(idx, b5), m6 = _mm512_test_epi32_mask(idx, b6);
      const __mmask16 m7 = _mm512_test_epi32_mask(idx, b7);
      for (int q = 0; q < 4; ++q) c[q] = _mm512_mask_blend_ps(m5, c[2 * q], c[2 * q + 1]);
      for (int q = 0; q < 2; ++q) c[q] = _mm512_mask_blend_ps(m6, c[2 * q], c[2 * q + 1]);
      _mm512_storeu_ps(out + j, _mm512_mul_ps(_mm512_mask_blend_ps(m7, c[0], c[1]), vs));
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

#if defined(FO_ISA_AVX512)
// Pieces of q8_block_encode_state's AVX-512 body (16 lanes): y = q8_state_y, u = q8_uniform from its
// integer stream + i * golden, and the sign rule and mirror (signed) or the floor (unsigned).
// y: min(max(|xn| (signed) or xn, 0), 1): max_ps returns its second operand (+0.0) for a NaN and for
// -0.0, so this is q8_state_y (clamp to [lo, 1], NaN -> 0, sign cleared) in three operations.
template <bool kSigned>
inline __m512 q8_y16(__m512 x, __m512 vinv) {
  __m512 xn = _mm512_mul_ps(x, vinv);
  if constexpr (kSigned) xn = _mm512_abs_ps(xn);
  return _mm512_min_ps(_mm512_max_ps(xn, _mm512_setzero_ps()), _mm512_set1_ps(1.0f));
}

inline __m512 q8_u16(__m512i w) {
  return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(w, 9)), _mm512_set1_ps(0x1p-23f));
}

// 1 + q8_uniform: its 23 bits as the mantissa of a float in [1, 2) (exact).
inline __m512 q8_one_plus_u16(__m512i w) {
  return _mm512_castsi512_ps(_mm512_or_si512(_mm512_srli_epi32(w, 9), _mm512_set1_epi32(0x3f800000)));
}

template <bool kSigned>
inline __m512i q8_finish16(__m512 x, __m512i r, __m512i floor_r) {
  const __m512i one_i = _mm512_set1_epi32(1), zero_code = _mm512_set1_epi32(kQ8ZeroSigned);
  if constexpr (kSigned) {
    r = _mm512_mask_max_epi32(r, _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_NEQ_OQ), r, one_i);  // not for NaN
    return _mm512_mask_sub_epi32(_mm512_add_epi32(zero_code, r), _mm512_movepi32_mask(_mm512_castps_si512(x)),
                                 zero_code, _mm512_min_epi32(r, zero_code));
  } else {
    return _mm512_max_epi32(r, floor_r);
  }
}
#endif

// Codes of the block's n new values v[0..n) (element i0 + j of the tensor at v[j]) under inverse
// scale inv: the optimizer's stochastic rounding, core/q8.h q8_state_code with q8_uniform(stream, .).
template <bool kSigned>
inline void q8_block_encode_state(const float* v, int n, float inv, const Q8Book& book, uint32_t stream, int64_t i0,
                                  uint8_t* out) {
  constexpr int nh = q8_half_size(kSigned);
  const float* half = book.half;
  const int32_t* hpacked = book.hpacked;  // the SIMD bodies' table (unused by the scalar build)
  (void)hpacked;
  constexpr uint32_t golden = 0x9e3779b9u;  // q8_uniform's multiplier
  (void)nh;
  (void)golden;
  int j = 0;
#if defined(FO_ISA_AVX512)
  {
    const __m512 vinv = _mm512_set1_ps(inv), one = _mm512_set1_ps(1.0f), zero = _mm512_setzero_ps();
    const __m512i one_i = _mm512_set1_epi32(1), top_r = _mm512_set1_epi32(nh - 1);
    const __m512i last_k = _mm512_set1_epi32(nh - 2);
    const __m512i blo = _mm512_set1_epi32(int(kQ8BucketLo)), bhi = _mm512_set1_epi32(int(kQ8BucketHi));
    const __m512i byte_mask = _mm512_set1_epi32(0xff), low_mask = _mm512_set1_epi32(0xffff);
    const __m512i has_bit = _mm512_set1_epi32(1 << 24);
    const __m512i floor_r = _mm512_set1_epi32(!kSigned && inv > 0.0f ? 1 : 0);  // unsigned: r >= 1 if absmax > 0
    // q8_uniform's integers stream + uint32(i) * golden of the 16 lanes at j (+ 16 golden per vector)
    const __m512i lane_w = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                              _mm512_set1_epi32(int32_t(golden)));
    auto w_at = [&](int j) {
      return _mm512_add_epi32(_mm512_set1_epi32(int32_t(stream + uint32_t(i0 + j) * golden)), lane_w);
    };
    __m512i w = w_at(0);
    const __m512i step16 = _mm512_set1_epi32(int32_t(16u * golden));
    // the table path for 16 values (live lanes) at j: #{H[k] <= y} from one gather of the packed bucket
    // table over H (core/q8.h q8_build_packed: the bucket's first index and its value's low bits), then
    // H[k] and H[k + 1] gathered and the threshold compared as in q8_state_code
    auto table16 = [&](int j, __mmask16 live, __m512i wv) {
      const __m512 x = _mm512_maskz_loadu_ps(live, v + j);
      const __m512 y = q8_y16<kSigned>(x, vinv), u = q8_u16(wv);
      const __m512i yb = _mm512_castps_si512(y);
      const __m512i a = _mm512_min_epu32(_mm512_max_epu32(_mm512_srli_epi32(yb, 16), blo), bhi);
      const __m512i e = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), live, _mm512_sub_epi32(a, blo), hpacked, 4);
      const __m512i thr16 = _mm512_and_si512(_mm512_srli_epi32(e, 8), low_mask);
      const __mmask16 inc = _mm512_test_epi32_mask(e, has_bit) &
                            _mm512_cmple_epu32_mask(thr16, _mm512_and_si512(yb, low_mask));
      // k = #{H <= y} - 1 (at most nh - 2 below 1.0; the top is set below)
      const __m512i cnt = _mm512_mask_add_epi32(_mm512_and_si512(e, byte_mask), inc, _mm512_and_si512(e, byte_mask), one_i);
      const __m512i k = _mm512_min_epi32(_mm512_sub_epi32(cnt, one_i), last_k);
      const __m512 h0 = _mm512_mask_i32gather_ps(zero, live, k, half, 4);
      const __m512 h1 = _mm512_mask_i32gather_ps(zero, live, _mm512_add_epi32(k, one_i), half, 4);
      const __m512 thr = _mm512_add_ps(h0, _mm512_mul_ps(u, _mm512_sub_ps(h1, h0)));
      __m512i r = _mm512_mask_add_epi32(k, _mm512_cmp_ps_mask(thr, y, _CMP_LT_OQ), k, one_i);
      r = _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(y, one, _CMP_GE_OQ), top_r);
      _mm512_mask_cvtepi32_storeu_epi8(out + j, live, q8_finish16<kSigned>(x, r, floor_r));
    };
    if (book.seg != nullptr) {
      // the segment form (core/q8.h q8_build_segments): r = floor(t - (1 + u)) with register lookups;
      // a vector with a value whose comparison is within 2 eps of its threshold is redone by the table path
      // (after the loop: a call inside it costs more than the ~1.5% of vectors it takes)
      const Q8Seg& sg = *book.seg;
      const __m512i first_lo = _mm512_load_si512(sg.first), first_hi = _mm512_load_si512(sg.first + 16);
      const __m512 next = _mm512_load_ps(sg.next), va = _mm512_load_ps(sg.a), vc = _mm512_load_ps(sg.c);
      const __m512i e96 = _mm512_set1_epi32(96);
      const __m512 margin = _mm512_set1_ps(4.0f * kQ8SegEps);
      // vectors for the table path, redone after each run of up to kQ8MaxBlock values (no branch in it)
      uint8_t near[kQ8MaxBlock / 16];
      while (j + 16 <= n) {
        const int j0 = j, end = n - j0 > kQ8MaxBlock ? j0 + kQ8MaxBlock : n;
        for (; j + 16 <= end; j += 16, w = _mm512_add_epi32(w, step16)) {
          const __m512 x = _mm512_loadu_ps(v + j);
          const __m512 y = q8_y16<kSigned>(x, vinv);
          // binades below 2^-31 (0 included) are segment 0's: the index is clamped, y is not
          const __m512i ex = _mm512_max_epi32(_mm512_srli_epi32(_mm512_castps_si512(y), 23), e96);
          __m512i s = _mm512_permutex2var_epi32(first_lo, ex, first_hi);
          for (int q = 0; q < kQ8SegCmp; ++q)
            s = _mm512_mask_add_epi32(s, _mm512_cmp_ps_mask(y, _mm512_permutexvar_ps(s, next), _CMP_GE_OQ), s, one_i);
          // t - (1 + u) (t ~ index + 2 + 2 eps): r = its floor unless its fraction is under 4 eps
          const __m512 t = _mm512_sub_ps(
              _mm512_fmadd_ps(y, _mm512_permutexvar_ps(s, va), _mm512_permutexvar_ps(s, vc)), q8_one_plus_u16(w));
          const __m512 fr = _mm512_reduce_ps(t, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
          near[(j - j0) >> 4] = uint8_t(_mm512_cmp_ps_mask(fr, margin, _CMP_LT_OQ) != 0);
          // away from an integer, the floor is in [lo[s], hi[s]] and y = 1 (in the last segment,
          // t = hi + 2 within 3 eps) gives the top: no clamp
          const __m512i r = _mm512_cvt_roundps_epi32(t, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
          _mm_storeu_si128(reinterpret_cast<__m128i*>(out + j), _mm512_cvtepi32_epi8(q8_finish16<kSigned>(x, r, floor_r)));
        }
        for (int q = 0; q < ((j - j0) >> 4); ++q)
          if (near[q]) table16(j0 + 16 * q, __mmask16(0xffff), w_at(j0 + 16 * q));
      }
    }
    for (; j < n; j += 16, w = _mm512_add_epi32(w, step16))
      table16(j, n - j >= 16 ? __mmask16(0xffff) : __mmask16((1u << (n - j)) - 1u), w);
  }
#elif defined(FO_ISA_AVX2)
  {
    // the table path of the AVX-512 body, 8 lanes (thr16 and low are < 2^16: signed compares are exact)
    const __m256 vinv = _mm256_set1_ps(inv), vlo = _mm256_set1_ps(kSigned ? -1.0f : 0.0f);
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps(), scale23 = _mm256_set1_ps(0x1p-23f);
    const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff), one_i = _mm256_set1_epi32(1);
    const __m256i zero_code = _mm256_set1_epi32(kQ8ZeroSigned), top_r = _mm256_set1_epi32(nh - 1);
    const __m256i last_k = _mm256_set1_epi32(nh - 2);
    const __m256i blo = _mm256_set1_epi32(int(kQ8BucketLo)), bhi = _mm256_set1_epi32(int(kQ8BucketHi));
    const __m256i byte_mask = _mm256_set1_epi32(0xff), low_mask = _mm256_set1_epi32(0xffff);
    const __m256i has_bit = _mm256_set1_epi32(1 << 24);
    const __m256i floor_r = _mm256_set1_epi32(!kSigned && inv > 0.0f ? 1 : 0);
    const __m256i lane_w8 = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(int32_t(golden)));
    __m256i w = _mm256_add_epi32(_mm256_set1_epi32(int32_t(stream + uint32_t(i0) * golden)), lane_w8);
    const __m256i step8 = _mm256_set1_epi32(int32_t(8u * golden));
    auto y8 = [&](__m256 x) {  // q8_state_y of 8 values
      __m256 xn = _mm256_mul_ps(x, vinv);
      xn = _mm256_and_ps(_mm256_cmp_ps(xn, xn, _CMP_ORD_Q), xn);  // NaN -> 0
      xn = _mm256_min_ps(one, _mm256_max_ps(vlo, xn));
      return _mm256_castsi256_ps(_mm256_and_si256(_mm256_castps_si256(xn), abs_mask));
    };
    auto finish8 = [&](__m256 x, __m256i r, int j) {  // the sign and floor rules, store 8 codes
      if constexpr (kSigned) {
        const __m256i nz = _mm256_castps_si256(_mm256_cmp_ps(x, zero, _CMP_NEQ_OQ));  // false for NaN
        r = _mm256_blendv_epi8(r, _mm256_max_epi32(r, one_i), nz);
        const __m256i neg = _mm256_srai_epi32(_mm256_castps_si256(x), 31);  // the sign bit
        r = _mm256_blendv_epi8(_mm256_add_epi32(zero_code, r), _mm256_sub_epi32(zero_code, _mm256_min_epi32(r, zero_code)),
                               neg);
      } else {
        r = _mm256_max_epi32(r, floor_r);
      }
      // 0 <= r <= 255: both saturating packs are exact
      const __m128i r16 = _mm_packs_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
      _mm_storel_epi64(reinterpret_cast<__m128i*>(out + j), _mm_packus_epi16(r16, r16));
    };
    // the table path for 8 values at j (wv: their q8_uniform integers)
    auto table8 = [&](int j, __m256i wv) {
      const __m256 x = _mm256_loadu_ps(v + j);
      const __m256 y = y8(x);
      const __m256i yb = _mm256_castps_si256(y);
      const __m256 u = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(wv, 9)), scale23);
      const __m256i a = _mm256_min_epu32(_mm256_max_epu32(_mm256_srli_epi32(yb, 16), blo), bhi);
      const __m256i e = _mm256_i32gather_epi32(hpacked, _mm256_sub_epi32(a, blo), 4);
      const __m256i thr16 = _mm256_and_si256(_mm256_srli_epi32(e, 8), low_mask);
      const __m256i has = _mm256_cmpeq_epi32(_mm256_and_si256(e, has_bit), has_bit);
      const __m256i inc = _mm256_andnot_si256(_mm256_cmpgt_epi32(thr16, _mm256_and_si256(yb, low_mask)), has);
      // compare masks are all ones (-1) where true: x + 1 is x - mask
      const __m256i k = _mm256_min_epi32(_mm256_sub_epi32(_mm256_sub_epi32(_mm256_and_si256(e, byte_mask), inc), one_i), last_k);
      const __m256 h0 = _mm256_i32gather_ps(half, k, 4);
      const __m256 h1 = _mm256_i32gather_ps(half, _mm256_add_epi32(k, one_i), 4);
      const __m256 thr = _mm256_add_ps(h0, _mm256_mul_ps(u, _mm256_sub_ps(h1, h0)));
      __m256i r = _mm256_sub_epi32(k, _mm256_castps_si256(_mm256_cmp_ps(thr, y, _CMP_LT_OQ)));
      r = _mm256_blendv_epi8(r, top_r, _mm256_castps_si256(_mm256_cmp_ps(y, one, _CMP_GE_OQ)));
      finish8(x, r, j);
    };
    if (book.seg != nullptr) {
      // the segment form of the AVX-512 body (core/q8.h q8_seg_r), its 16- and 32-entry register
      // lookups as 8-entry permutes blended on the index's bits 3 (and 4); vectors with a value within
      // 4 eps of its threshold are redone by the table path after each run
      const Q8Seg& sg = *book.seg;
      __m256i first[4];
      for (int q = 0; q < 4; ++q) first[q] = _mm256_load_si256(reinterpret_cast<const __m256i*>(sg.first + 8 * q));
      const __m256 next0 = _mm256_load_ps(sg.next), next1 = _mm256_load_ps(sg.next + 8);
      const __m256 va0 = _mm256_load_ps(sg.a), va1 = _mm256_load_ps(sg.a + 8);
      const __m256 vc0 = _mm256_load_ps(sg.c), vc1 = _mm256_load_ps(sg.c + 8);
      const __m256i e96 = _mm256_set1_epi32(96), one_bits = _mm256_set1_epi32(0x3f800000);
      const __m256 margin = _mm256_set1_ps(4.0f * kQ8SegEps);
      auto pick16 = [](__m256 t0, __m256 t1, __m256i s) {  // t[s & 15]
        return _mm256_blendv_ps(_mm256_permutevar8x32_ps(t0, s), _mm256_permutevar8x32_ps(t1, s),
                                _mm256_castsi256_ps(_mm256_slli_epi32(s, 28)));
      };
      uint8_t near[kQ8MaxBlock / 8];
      while (j + 8 <= n) {
        const int j0 = j, end = n - j0 > kQ8MaxBlock ? j0 + kQ8MaxBlock : n;
        for (; j + 8 <= end; j += 8, w = _mm256_add_epi32(w, step8)) {
          const __m256 x = _mm256_loadu_ps(v + j);
          const __m256 y = y8(x);
          // binades below 2^-31 (0 included) are segment 0's: first[max(exponent, 96) & 31]
          const __m256i ex = _mm256_max_epi32(_mm256_srli_epi32(_mm256_castps_si256(y), 23), e96);
          const __m256 b3 = _mm256_castsi256_ps(_mm256_slli_epi32(ex, 28)), b4 = _mm256_castsi256_ps(_mm256_slli_epi32(ex, 27));
          const __m256 f01 = _mm256_blendv_ps(_mm256_castsi256_ps(_mm256_permutevar8x32_epi32(first[0], ex)),
                                              _mm256_castsi256_ps(_mm256_permutevar8x32_epi32(first[1], ex)), b3);
          const __m256 f23 = _mm256_blendv_ps(_mm256_castsi256_ps(_mm256_permutevar8x32_epi32(first[2], ex)),
                                              _mm256_castsi256_ps(_mm256_permutevar8x32_epi32(first[3], ex)), b3);
          __m256i s = _mm256_castps_si256(_mm256_blendv_ps(f01, f23, b4));
          for (int q = 0; q < kQ8SegCmp; ++q)  // s += y >= next[s & 15]
            s = _mm256_sub_epi32(s, _mm256_castps_si256(_mm256_cmp_ps(y, pick16(next0, next1, s), _CMP_GE_OQ)));
          // t - (1 + u) (t ~ index + 2 + 2 eps): r = its floor unless its fraction is under 4 eps
          const __m256 one_u = _mm256_castsi256_ps(_mm256_or_si256(_mm256_srli_epi32(w, 9), one_bits));
          const __m256 t = _mm256_sub_ps(_mm256_fmadd_ps(y, pick16(va0, va1, s), pick16(vc0, vc1, s)), one_u);
          const __m256 fl = _mm256_round_ps(t, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
          near[(j - j0) >> 3] = uint8_t(_mm256_movemask_ps(_mm256_cmp_ps(_mm256_sub_ps(t, fl), margin, _CMP_LT_OQ)) != 0);
          finish8(x, _mm256_cvttps_epi32(fl), j);
        }
        for (int q = 0; q < ((j - j0) >> 3); ++q)
          if (near[q]) {
            const int jq = j0 + 8 * q;
            table8(jq, _mm256_add_epi32(_mm256_set1_epi32(int32_t(stream + uint32_t(i0 + jq) * golden)), lane_w8));
          }
      }
    }
    for (; j + 8 <= n; j += 8, w = _mm256_add_epi32(w, step8)) table8(j, w);
  }
#endif
  for (; j < n; ++j) {
    const float y = q8_state_y(v[j], inv, kSigned);
    out[j] = uint8_t(q8_state_code(half, kSigned, q8_encode_bucket(half, book.hbucket, y), v[j], y, inv,
                                   q8_uniform(stream, i0 + j)));
  }
}

}  // namespace fusedopt::cpu::FO_ISA
