// The 8-bit codec core (core/q8.h): the CPU's one-comparison bucket encoder gives the same code as
// the branchless binary search (the CUDA kernels' encoder) for float32 values across [-1, 1], and
// both give #{k : mid[k] <= x}, as does the packed one-lookup form of the CPU's SIMD encoders; maps
// sorted, midpoints between neighbours. The optimizer's stochastic rounding (q8_state_code): its
// counts over the half maps (bucket, packed, search forms agree), it is unbiased and only ever picks
// the two map values around x, a value on a code stays, the floor and sign rules hold; the segment
// table builds.
#include <cmath>
#include <cstdio>
#include <vector>

#include "core/q8.h"
#include "core/storage.h"
#include "harness.h"

using namespace fusedopt;

namespace {
const float kSV[256] = {FO_Q8_SIGNED_VALUES};
const float kSM[256] = {FO_Q8_SIGNED_MIDS};
const float kUV[256] = {FO_Q8_UNSIGNED_VALUES};
const float kUM[256] = {FO_Q8_UNSIGNED_MIDS};

int count_upto(const float* mid, float x) {
  int c = 0;
  while (c < 256 && mid[c] <= x) ++c;
  return c;
}

void check_map(const float* v, const float* m) {
  bool sorted = true, mids = true;
  for (int k = 0; k < 255; ++k) {
    sorted = sorted && v[k] < v[k + 1];
    mids = mids && m[k] == (v[k] + v[k + 1]) * 0.5f;
  }
  CHECK(sorted);
  CHECK(mids);
  CHECK(std::isinf(m[255]));
  CHECK(v[255] == 1.0f);
}

// A scalar model of the SIMD bodies' packed lookup over H (core/q8.h q8_build_packed; cpu/q8_block.h).
int packed_count(const int32_t* packed, float y) {
  const uint32_t u = q8_bits(y);
  const int32_t e = packed[q8_bucket_index(y)];
  const uint32_t thr = uint32_t(e >> 8) & 0xffffu, low = u & 0xffffu;
  const bool has = (e >> 24) & 1;
  return (e & 0xff) + ((has && thr <= low) ? 1 : 0);
}

// one(x) for every 127th float pattern of [0, 1] and its negative, and for points[0..n) and their
// float neighbours (one() skips what it does not take).
template <class F>
void sweep(const float* points, int n, F&& one) {
  for (uint32_t u = 0; u <= 0x3F800000u; u += 127) {
    one(q8_from_bits(u));
    one(-q8_from_bits(u));
  }
  for (int k = 0; k < n; ++k) {
    one(points[k]);
    one(std::nextafter(points[k], 2.0f));
    one(std::nextafter(points[k], -2.0f));
  }
}

void check_encoders(const float* mid, bool is_signed) {
  static int32_t bucket[kQ8Buckets];
  CHECK(q8_build_buckets(mid, bucket));
  int64_t bad = 0, n = 0;
  auto one = [&](float x) {
    if (!(x >= (is_signed ? -1.0f : 0.0f) && x <= 1.0f)) return;
    const int want = count_upto(mid, x);
    bad += q8_encode_bucket(mid, bucket, x) != want;
    bad += q8_encode_search(mid, x) != want;
    ++n;
  };
  sweep(mid, 255, one);
  CHECK(n > 1000000);
  CHECK(bad == 0);
}

// #{j : H[j] <= y} for y in [0, 1): the bucket, packed and search forms over the padded half map.
void check_half_counts(const float* value, bool is_signed) {
  static float half[256];
  static int32_t bucket[kQ8Buckets], packed[kQ8BucketHalf];
  q8_fill_half(value, is_signed, half);
  CHECK(half[0] == 0.0f && half[q8_half_size(is_signed) - 1] == 1.0f);
  CHECK(q8_build_buckets(half, bucket));
  CHECK(q8_build_packed(half, bucket, packed));
  int64_t bad = 0, n = 0;
  auto one = [&](float y) {
    if (!(y >= 0.0f && y < 1.0f) || std::signbit(y)) return;  // y as the engines make it (q8_state_y)
    const int want = count_upto(half, y);
    bad += q8_encode_bucket(half, bucket, y) != want;
    bad += packed_count(packed, y) != want;
    bad += q8_encode_search(half, y) != want;
    ++n;
  };
  sweep(half, q8_half_size(is_signed), one);
  CHECK(n > 1000000);
  CHECK(bad == 0);
}

// Mean of the decoded value over many elements (a different uniform each) is x, within 4 standard
// errors, for x at several places between two codes; every code is one of the two around x.
void check_unbiased(const float* v, bool is_signed) {
  static float half[256];
  q8_fill_half(v, is_signed, half);
  const int n = 200000;
  const uint32_t stream = q8_state_stream(sr_seed(3u, 17.0), 1);
  for (int c : {1, 40, 128, 140, 200, 254}) {
    for (float f : {0.02f, 0.3f, 0.5f, 0.77f, 0.98f}) {
      const float x = v[c] + f * (v[c + 1] - v[c]);
      const float y = q8_state_y(x, 1.0f, is_signed);
      const int cnt = q8_encode_search(half, y);
      double sum = 0.0;
      int other = 0;
      for (int i = 0; i < n; ++i) {
        const int k = q8_state_code(half, is_signed, cnt, x, y, 1.0f, q8_uniform(stream, i));
        other += k != c && k != c + 1;
        sum += v[k];
      }
      const double gap = double(v[c + 1]) - double(v[c]);
      const double p = double(f), se = gap * std::sqrt(p * (1.0 - p) / n);
      CHECK(other == 0);
      CHECK(std::fabs(sum / n - double(x)) <= 4.0 * se + 1e-6 * gap);
    }
  }
}
}  // namespace

TEST_CASE(maps_sorted_with_midpoints) {
  check_map(kSV, kSM);
  check_map(kUV, kUM);
  CHECK(kSV[kQ8ZeroSigned] == 0.0f);
  CHECK(kUV[0] == 0.0f);
}

TEST_CASE(bucket_encoder_equals_binary_search_signed) { check_encoders(kSM, true); }
TEST_CASE(bucket_encoder_equals_binary_search_unsigned) { check_encoders(kUM, false); }
TEST_CASE(half_map_counts_signed) { check_half_counts(kSV, true); }
TEST_CASE(half_map_counts_unsigned) { check_half_counts(kUV, false); }

TEST_CASE(normalise_and_guards) {
  CHECK(q8_normalise(NAN, 1.0f, -1.0f) == 0.0f);
  CHECK(q8_normalise(5.0f, 0.0f, -1.0f) == 0.0f);  // absmax 0 -> inv 0 -> code of 0
  CHECK(q8_normalise(INFINITY, 0.5f, -1.0f) == 1.0f);
  CHECK(q8_normalise(-3.0f, 0.5f, 0.0f) == 0.0f);
  CHECK(q8_inv(0.0f) == 0.0f);
  CHECK(q8_abs_finite(-INFINITY) == 0.0f && q8_abs_finite(NAN) == 0.0f && q8_abs_finite(-2.0f) == 2.0f);
  // the CPU engine maxes bit patterns: -0.0 (0x80000000) must come back as +0.0 or it beats all
  CHECK(q8_bits(q8_abs_finite(-0.0f)) == 0u && q8_bits(q8_abs_finite(0.0f)) == 0u);
  CHECK(q8_bits(q8_state_y(-0.0f, 1.0f, true)) == 0u && q8_state_y(-0.25f, 2.0f, true) == 0.5f);
}

TEST_CASE(stochastic_rounding_is_unbiased_signed) { check_unbiased(kSV, true); }
TEST_CASE(stochastic_rounding_is_unbiased_unsigned) { check_unbiased(kUV, false); }

TEST_CASE(state_code_floor_sign_and_ends) {
  static float hs[256], hu[256];
  q8_fill_half(kSV, true, hs);
  q8_fill_half(kUV, false, hu);
  auto code = [&](bool sg, float x, float inv, float u) {
    const float y = q8_state_y(x, inv, sg);
    const float* h = sg ? hs : hu;
    return q8_state_code(h, sg, q8_encode_search(h, y), x, y, inv, u);
  };
  for (int i = 0; i < 1000; ++i) {
    const float u = q8_uniform(q8_state_stream(99u, 0), i);
    CHECK(u >= 0.0f && u < 1.0f);
    // unsigned: never code 0 in a block with absmax > 0 (0 itself included); code 0 when absmax is 0
    CHECK(code(false, 0.0f, 2.0f, u) == 1);
    CHECK(code(false, 1e-9f, 1.0f, u) == 1);
    CHECK(code(false, 0.0f, 0.0f, u) == 0);
    CHECK(code(false, -3.0f, 1.0f, u) == 1);  // below 0: clamped to 0
    // signed: a tiny non-zero value keeps its sign; 0 (and NaN) stays 0; the ends of the map
    CHECK(code(true, 1e-9f, 1.0f, u) == kQ8ZeroSigned + 1);
    CHECK(code(true, -1e-9f, 1.0f, u) == kQ8ZeroSigned - 1);
    CHECK(code(true, 0.0f, 1.0f, u) == kQ8ZeroSigned && code(true, -0.0f, 1.0f, u) == kQ8ZeroSigned);
    CHECK(code(true, NAN, 1.0f, u) == kQ8ZeroSigned);
    CHECK(code(true, 1.0f, 1.0f, u) == 255 && code(true, INFINITY, 1.0f, u) == 255);
    CHECK(code(true, -1.0f, 1.0f, u) == 0);  // -1 lies below the map's -0.99297
    CHECK(code(false, 1.0f, 1.0f, u) == 255);
    // a value on a code stays there (both signs)
    CHECK(code(true, kSV[60], 1.0f, u) == 60 && code(true, kSV[200], 1.0f, u) == 200);
    CHECK(code(false, kUV[7], 1.0f, u) == 7);
  }
  // streams differ by state list and by step
  CHECK(q8_state_stream(sr_seed(0u, 1.0), 0) != q8_state_stream(sr_seed(0u, 1.0), 1));
  CHECK(q8_state_stream(sr_seed(0u, 1.0), 0) != q8_state_stream(sr_seed(0u, 2.0), 0));
}

// The segment table builds for both half maps and refuses one whose values a linear fit cannot place.
TEST_CASE(segment_builder) {
  for (int m = 0; m < 2; ++m) {
    float half[256];
    q8_fill_half(m ? kSV : kUV, m == 1, half);
    Q8Seg sg;
    CHECK(q8_build_segments(half, m == 1, &sg));
    const int j = q8_half_size(m == 1) - 20;  // inside the top decade's run
    half[j] = 0.5f * (half[j] + half[j + 1]);  // half a step up: off the fitted line
    CHECK(!q8_build_segments(half, m == 1, &sg));
  }
}

// The per-element segment form (q8_seg_r: the CUDA walk's encoder, the CPU's AVX-512 form element by
// element) gives q8_state_r's r wherever it does not hand over (-1), for both maps, on the full and
// the compact table: y over every binade from 2^-31 to 1 (random mantissas, every map value and its
// neighbouring floats, 0 and 1) times many u; it hands over for well under 1% of the pairs.
TEST_CASE(segment_form_equals_state_code) {
  for (int m = 0; m < 2; ++m) {
    const bool sg = m == 1;
    float half[256];
    q8_fill_half(sg ? kSV : kUV, sg, half);
    Q8Seg seg;
    CHECK(q8_build_segments(half, sg, &seg));
    Q8SegLite lite;
    q8_seg_lite(seg, &lite);
    std::vector<float> ys = {0.0f, 1.0f, 1e-30f, 0x1p-32f};
    uint64_t rng = 12345u + uint64_t(m);
    auto next_u32 = [&]() {
      rng = rng * 6364136223846793005ull + 1442695040888963407ull;
      return uint32_t(rng >> 32);
    };
    for (uint32_t e = 96; e <= 126; ++e)
      for (int k = 0; k < 2000; ++k) ys.push_back(q8_from_bits((e << 23) | (next_u32() & 0x7fffffu)));
    for (int j = 0; j < q8_half_size(sg); ++j)
      for (int d = -3; d <= 3; ++d) {
        const float y = q8_from_bits(uint32_t(int64_t(q8_bits(half[j])) + d));
        if (y >= 0.0f && y <= 1.0f) ys.push_back(y);
      }
    int64_t pairs = 0, handed = 0, bad = 0;
    for (size_t yi = 0; yi < ys.size(); ++yi) {
      const float y = ys[yi];
      const int cnt = q8_encode_search(half, y);
      const uint32_t stream = q8_block_stream(q8_state_stream(sr_seed(0u, double(yi % 97)), m), next_u32());
      for (int i = 0; i < 64; ++i) {
        const float u = q8_uniform(stream, i);
        const int want = q8_state_r(half, sg, cnt, y, u);
        const int r = q8_seg_r(seg, y, u), rl = q8_seg_r(lite, y, u);
        ++pairs;
        if (r != rl) ++bad;
        if (r < 0) {
          ++handed;
        } else if (r != want) {
          if (bad < 5) std::printf("map %d: y %a u %a: segment r %d, state code r %d\n", m, y, u, r, want);
          ++bad;
        }
      }
    }
    CHECK(pairs > 4000000);
    CHECK(bad == 0);
    CHECK_MSG(handed * 100 < pairs, "handed over %lld of %lld", (long long)handed, (long long)pairs);
  }
}

int main(int argc, char** argv) { return fo_test::run_all(argc, argv); }
