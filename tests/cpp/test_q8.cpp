// The 8-bit codec core (core/q8.h): the CPU's one-comparison bucket encoder gives the same code as
// the branchless binary search (the CUDA kernels' encoder) for float32 values across [-1, 1], and
// both give #{k : mid[k] <= x}, as does the packed one-lookup form of the CPU's SIMD encoders; maps
// sorted, midpoints between neighbours.
#include "core/q8.h"
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

// A scalar model of the SIMD encoders' packed lookup (core/q8.h q8_build_packed; cpu/q8_block.h).
int packed_encode(const int32_t* packed, float x) {
  const uint32_t u = q8_bits(x);
  const int32_t e = packed[q8_bucket_index(x)];
  const uint32_t thr = uint32_t(e >> 8) & 0xffffu, low = u & 0xffffu;
  const bool has = (e >> 24) & 1;
  const bool inc = has && ((u >> 31) ? thr >= low : thr <= low);
  return (e & 0xff) + (inc ? 1 : 0);
}

void check_encoders(const float* mid, bool is_signed) {
  static int32_t bucket[kQ8Buckets], packed[kQ8Buckets];
  CHECK(q8_build_buckets(mid, bucket));
  CHECK(q8_build_packed(mid, bucket, packed));
  int64_t bad = 0, n = 0;
  auto one = [&](float x) {
    if (!(x >= (is_signed ? -1.0f : 0.0f) && x <= 1.0f)) return;
    const int want = count_upto(mid, x);
    bad += q8_encode_bucket(mid, bucket, x) != want;
    bad += q8_encode_search(mid, x) != want;
    bad += packed_encode(packed, x) != want;
    ++n;
  };
  for (uint32_t u = 0; u <= 0x3F800000u; u += 127) {  // every 127th pattern of [0, 1], both signs
    float f;
    std::memcpy(&f, &u, 4);
    one(f);
    one(-f);
  }
  for (int k = 0; k < 255; ++k) {  // every midpoint and its neighbours
    one(mid[k]);
    one(std::nextafter(mid[k], 2.0f));
    one(std::nextafter(mid[k], -2.0f));
  }
  CHECK(n > 1000000);
  CHECK(bad == 0);
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

TEST_CASE(normalise_sign_fix_and_guards) {
  CHECK(q8_normalise(NAN, 1.0f, -1.0f) == 0.0f);
  CHECK(q8_normalise(5.0f, 0.0f, -1.0f) == 0.0f);  // absmax 0 -> inv 0 -> code of 0
  CHECK(q8_normalise(INFINITY, 0.5f, -1.0f) == 1.0f);
  CHECK(q8_normalise(-3.0f, 0.5f, 0.0f) == 0.0f);
  CHECK(q8_inv(0.0f) == 0.0f);
  CHECK(q8_abs_finite(-INFINITY) == 0.0f && q8_abs_finite(NAN) == 0.0f && q8_abs_finite(-2.0f) == 2.0f);
  // the CPU engine maxes bit patterns: -0.0 (0x80000000) must come back as +0.0 or it beats all
  CHECK(q8_bits(q8_abs_finite(-0.0f)) == 0u && q8_bits(q8_abs_finite(0.0f)) == 0u);
  CHECK(q8_sign_fix(kQ8ZeroSigned, 1e-9f) == kQ8ZeroSigned + 1);
  CHECK(q8_sign_fix(kQ8ZeroSigned, -1e-9f) == kQ8ZeroSigned - 1);
  CHECK(q8_sign_fix(kQ8ZeroSigned, 0.0f) == kQ8ZeroSigned);
  CHECK(q8_sign_fix(200, 0.5f) == 200);
}

int main(int argc, char** argv) { return fo_test::run_all(argc, argv); }
