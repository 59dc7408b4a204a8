// The CPU's SIMD 8-bit codec bodies (csrc/cpu/q8_block.h) against the scalar code (core/q8.h), for
// the ISA this binary is built for (CMake builds it twice: FO_TEST_AVX512 with AVX-512 + VBMI flags,
// FO_TEST_AVX2 with AVX2 flags). On a CPU without that ISA (or without VBMI for the VBMI decoder) the
// cases say so and check nothing of it.
//   encode: the optimizer's stochastic rounding (q8_block_encode_state) against q8_state_code, for
//           every 61st float bit pattern (both signs, through NaN and inf), every map value and its
//           neighbours, at scales 1, 0.37 and 0, block lengths that leave SIMD tails, a new stream and
//           element offset per block; both maps; the AVX-512 and AVX2 bodies with and without their
//           segment table (core/q8.h q8_build_segments), and a check that the segment path, not its
//           table fallback, encodes most values;
//   decode: every code at every position of 0..4096-element blocks, at several scales; both maps;
//   absmax: blocks with NaN, inf, -0.0 and tails.
#if defined(FO_TEST_AVX512)
#define FO_ISA avx512
#define FO_ISA_AVX512 1
#else
#define FO_ISA avx2
#define FO_ISA_AVX2 1
#endif
#include <immintrin.h>

#include "core/q8.h"
#include "cpu/q8_block.h"
#include "harness.h"

using namespace fusedopt;

namespace {
const float kValues[2][256] = {{FO_Q8_UNSIGNED_VALUES}, {FO_Q8_SIGNED_VALUES}};
const float kMids[2][256] = {{FO_Q8_UNSIGNED_MIDS}, {FO_Q8_SIGNED_MIDS}};
alignas(64) int32_t g_bucket[2][kQ8Buckets];
alignas(64) float g_half[2][256];
alignas(64) int32_t g_hbucket[2][kQ8Buckets];
alignas(64) int32_t g_hpacked[2][kQ8BucketHalf];
alignas(64) uint8_t g_planes[2][1024];
Q8Seg g_seg[2];

bool isa_ok() {
#if defined(FO_TEST_AVX512)
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
#else
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
}

Q8Book book(int s) {  // as csrc/cpu/dispatch.cpp builds them
  static bool built = false;
  if (!built) {
    for (int m = 0; m < 2; ++m) {
      q8_fill_half(kValues[m], m == 1, g_half[m]);
      CHECK(q8_build_buckets(kMids[m], g_bucket[m]));
      CHECK(q8_build_buckets(g_half[m], g_hbucket[m]));
      CHECK(q8_build_packed(g_half[m], g_hbucket[m], g_hpacked[m]));
      CHECK(q8_build_segments(g_half[m], m == 1, &g_seg[m]));
      for (int k = 0; k < 256; ++k)
        for (int b = 0; b < 4; ++b) g_planes[m][256 * b + k] = uint8_t(q8_bits(kValues[m][k]) >> (8 * b));
    }
    built = true;
  }
  return Q8Book{kValues[s], kMids[s], g_bucket[s], s == 1, g_half[s], g_hbucket[s], g_hpacked[s], g_planes[s], &g_seg[s]};
}

int scalar_code(int s, float x, float inv, uint32_t stream, int64_t i) {
  const float y = q8_state_y(x, inv, s == 1);
  return q8_state_code(g_half[s], s == 1, q8_encode_bucket(g_half[s], g_hbucket[s], y), x, y, inv,
                       q8_uniform(stream, i));
}

void encode(int s, const float* v, int n, float inv, const Q8Book& bk, uint32_t stream, int64_t i0, uint8_t* out) {
  if (s)
    cpu::FO_ISA::q8_block_encode_state<true>(v, n, inv, bk, stream, i0, out);
  else
    cpu::FO_ISA::q8_block_encode_state<false>(v, n, inv, bk, stream, i0, out);
}

void check_encode(int s, bool with_seg) {
  Q8Book bk = book(s);
  if (!with_seg) bk.seg = nullptr;
  std::vector<float> v;
  for (uint64_t u = 0; u <= 0xffffffffull; u += 61) v.push_back(q8_from_bits(uint32_t(u)));
  for (int k = 0; k < 256; ++k)
    for (float sign : {1.0f, -1.0f}) {
      const float m = sign * kValues[s][k];
      v.push_back(m);
      v.push_back(std::nextafter(m, 2.0f));
      v.push_back(std::nextafter(m, -2.0f));
    }
  int64_t bad = 0, n = 0;
  std::vector<uint8_t> out(v.size() + 64);
  uint32_t blk = 0;
  for (float inv : {1.0f, 0.37f, 0.0f}) {
    for (int len : {4096, 1000, 17}) {  // tails of 8 and 1 elements in the SIMD loops
      for (size_t b = 0; b < v.size(); b += size_t(len)) {
        const int m = int(std::min<size_t>(size_t(len), v.size() - b));
        ++blk;
        const uint32_t stream = q8_state_stream(mix32(blk), int(blk & 3u));
        const int64_t i0 = int64_t(b) + (int64_t(blk) << 20);
        encode(s, v.data() + b, m, inv, bk, stream, i0, out.data());
        for (int j = 0; j < m; ++j) bad += int(out[size_t(j)]) != scalar_code(s, v[b + size_t(j)], inv, stream, i0 + j);
        n += m;
      }
    }
  }
  CHECK(n > 100000000);
  CHECK(bad == 0);
}

// The segment path really encodes: with a wrong packed table (every entry 0), only the vectors it
// sends to the table fallback come out wrong, a few in 100 for typical states; without the segment
// table, most are wrong (the table path reads the table).
[[maybe_unused]] void check_segment_path_runs(int s) {
  Q8Book bk = book(s);
  static int32_t zero_packed[kQ8BucketHalf];
  bk.hpacked = zero_packed;
  std::vector<float> v(1 << 16);
  uint32_t r = 777u;
  for (auto& x : v) {  // log-uniform magnitudes over 1e-6..1, both signs
    r = r * 1664525u + 1013904223u;
    const float mag = std::pow(10.0f, -6.0f * float(r >> 8) / 16777216.0f);
    x = (s && (r & 1u)) ? -mag : mag;
  }
  std::vector<uint8_t> out(v.size());
  const uint32_t stream = q8_state_stream(12345u, 0);
  for (int with_seg = 1; with_seg >= 0; --with_seg) {
    if (!with_seg) bk.seg = nullptr;
    encode(s, v.data(), int(v.size()), 1.0f, bk, stream, 0, out.data());
    int64_t bad = 0;
    for (size_t j = 0; j < v.size(); ++j) bad += int(out[j]) != scalar_code(s, v[j], 1.0f, stream, int64_t(j));
    std::printf("  map %d%s: %lld of %zu values differ with a wrong fallback table\n", s,
                with_seg ? "" : " (no segment table)", (long long)bad, v.size());
    CHECK(with_seg ? bad < int64_t(v.size()) / 20 : bad > int64_t(v.size()) / 2);
  }
}

void check_decode(int s, bool with_planes) {
  Q8Book bk = book(s);
  if (!with_planes) bk.planes = nullptr;
  int64_t bad = 0, n = 0;
  std::vector<uint8_t> codes(4096 + 64);
  std::vector<float> out(4096 + 1);
  uint32_t r = 12345u;
  for (int len : {0, 1, 63, 64, 65, 127, 256, 1000, 4096}) {
    for (int rep = 0; rep < 300; ++rep) {
      for (int j = 0; j < len; ++j) {
        r = r * 1664525u + 1013904223u;
        codes[size_t(j)] = uint8_t(rep < 256 ? (j + rep) & 255 : int(r >> 24));
      }
      const float scale = rep % 3 == 0 ? 1.0f : std::ldexp(float(rep % 1000 + 1) / 1000.0f, rep % 40 - 20);
      out[size_t(len)] = -7.0f;
      cpu::FO_ISA::q8_block_decode(codes.data(), len, scale, bk, out.data());
      for (int j = 0; j < len; ++j) {
        const float want = kValues[s][codes[size_t(j)]] * scale;
        bad += q8_bits(want) != q8_bits(out[size_t(j)]);
      }
      bad += out[size_t(len)] != -7.0f;  // nothing written past the block
      n += len;
    }
  }
  CHECK(n > 100000);
  CHECK(bad == 0);
}
}  // namespace

TEST_CASE(encode_signed_equals_scalar) {
  if (!isa_ok()) return (void)std::printf("  (this CPU lacks the ISA: nothing checked)\n");
  check_encode(1, true);
  check_encode(1, false);
}

TEST_CASE(encode_unsigned_equals_scalar) {
  if (!isa_ok()) return (void)std::printf("  (this CPU lacks the ISA: nothing checked)\n");
  check_encode(0, true);
  check_encode(0, false);
}

TEST_CASE(segment_encoder_runs) {
  if (!isa_ok()) return (void)std::printf("  (this CPU lacks the ISA: nothing checked)\n");
  check_segment_path_runs(0);
  check_segment_path_runs(1);
}

TEST_CASE(decode_equals_scalar) {
  if (!isa_ok()) return (void)std::printf("  (this CPU lacks the ISA: nothing checked)\n");
  check_decode(0, false);
  check_decode(1, false);
#if defined(FO_TEST_AVX512)
  if (cpu::FO_ISA::q8_cpu_has_vbmi()) {  // the byte-plane decoder
    check_decode(0, true);
    check_decode(1, true);
  } else {
    std::printf("  (no AVX-512 VBMI: the byte-plane decoder is not checked)\n");
  }
#endif
}

TEST_CASE(absmax_ignores_non_finite) {
  if (!isa_ok()) return (void)std::printf("  (this CPU lacks the ISA: nothing checked)\n");
  std::vector<float> v = {0.5f, -0.0f, -3.0f, __builtin_nanf(""), __builtin_inff(), -__builtin_inff(), 2.0f};
  for (int i = 0; i < 40; ++i) v.push_back(float(i % 7) * 0.25f - 1.0f);
  for (int n = 0; n <= int(v.size()); ++n) {
    uint32_t want = 0;
    for (int j = 0; j < n; ++j) {
      const uint32_t a = q8_bits(q8_abs_finite(v[size_t(j)]));
      want = a > want ? a : want;
    }
    CHECK(cpu::FO_ISA::q8_block_absmax(v.data(), n) == want);
  }
}

int main(int argc, char** argv) { return fo_test::run_all(argc, argv); }
