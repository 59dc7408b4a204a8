// Launch-configuration check of the CUDA engine, on the host (g++, no GPU, no CUDA headers): every
// kernel's planned launches, for every tensor count from 1 to 5,000 and every size class, fit the
// kernel's launch bounds, the device's block and grid limits and the kernel-argument budget, and the
// piece planners cover every piece of every tensor exactly once, in order. These are the planners the
// .cu files launch from (csrc/cuda/launch_plan.h), so a launch that would fail at run time with
// cudaErrorInvalidValue fails here first.
#include <cstdint>
#include <string>
#include <vector>

#include "cuda/adafactor_plan.h"
#include "cuda/launch_plan.h"
#include "harness.h"

namespace {

using namespace fusedopt;
using namespace fusedopt::cuda;

constexpr int kMaxCount = 5000;

// ---- batch kernels ------------------------------------------------------------------------------------
// Empty when every launch for 1..kMaxCount tensors fits, else the first violation.
std::string check_batch(const BatchKernel& k) {
  for (int64_t n = 1; n <= kMaxCount; ++n) {
    int64_t next = 0;
    std::string err;
    for_each_batch(k, n, [&](int64_t first, int count, int threads) {
      if (!err.empty()) return;
      if (first != next || count < 1 || count > k.per_launch)
        err = fo_test::fmt("%s, %lld tensors: launch of tensors [%lld, +%d) (per launch %d, expected first %lld)",
                           k.name, (long long)n, (long long)first, count, k.per_launch, (long long)next);
      else if (threads < count || threads % kWarp != 0 || threads > k.bound || threads > kMaxBlockThreads)
        err = fo_test::fmt("%s, %lld tensors: a launch of %d tensors gets %d threads, launch bounds %d", k.name,
                           (long long)n, count, threads, k.bound);
      next = first + count;
    });
    if (err.empty() && next != n) err = fo_test::fmt("%s, %lld tensors: covered %lld", k.name, (long long)n, (long long)next);
    if (!err.empty()) return err;
  }
  return "";
}

TEST_CASE(batch_kernels_fit_their_launch_bounds_for_1_to_5000_tensors) {
  for (const BatchKernel* k : {&kStepBump, &kAuxPass, &kRedOutFold, &kCombine, &kAfTensors}) {
    const std::string err = check_batch(*k);
    CHECK_MSG(err.empty(), "%s", err.c_str());
  }
}

TEST_CASE(kernel_arguments_fit_the_budget) {
  CHECK(sizeof(StepBumpArgs) <= size_t(kArgBytes));
  CHECK(sizeof(AuxArgs) <= size_t(kArgBytes));
  CHECK(sizeof(RedOutArgs) <= size_t(kArgBytes));
  CHECK(sizeof(CombineArgs) + sizeof(void*) + kRedParamBytes <= size_t(kArgBytes));
  CHECK(sizeof(RedMeta) + kRedParamBytes <= size_t(kBigArgBytes));
  CHECK(kAfTensorArgBytes <= size_t(kArgBytes));
  CHECK(kAfFactorArgBytes <= size_t(kArgBytes));
  CHECK(kAfPassArgBytes <= size_t(kBigArgBytes));
}

template <int D>
void check_mta_depths() {
  if constexpr (D <= kMtaMaxDepth) {
    CHECK_MSG(sizeof(TensorListMeta<D>) + size_t(kMtaFnBytes) <= size_t(kMtaArgBytes), "depth %d: %zu bytes", D,
              sizeof(TensorListMeta<D>));
    CHECK_MSG(TensorListMeta<D>::kMaxTensors >= 8 && TensorListMeta<D>::kMaxTensors <= 65535, "depth %d: %d slots",
              D, TensorListMeta<D>::kMaxTensors);
    check_mta_depths<D + 1>();
  }
}

TEST_CASE(multi_tensor_metadata_fits_the_budget_at_every_depth) { check_mta_depths<1>(); }

// ---- piece kernels ----------------------------------------------------------------------------------------
// Records what plan_pieces asks for and checks it as it goes.
struct Recorder {
  int max_slots, max_blocks;
  const std::vector<int64_t>& pieces;
  std::string err;
  std::vector<int64_t> slot_tensor;  // tensor in each slot of the launch being built
  std::vector<int64_t> next_piece;   // per tensor: the piece expected next
  std::vector<std::pair<int, int32_t>> pending;  // (slot, piece) of the blocks of the launch being built
  int64_t launches = 0;

  Recorder(int ms, int mb, const std::vector<int64_t>& p)
      : max_slots(ms), max_blocks(mb), pieces(p), slot_tensor(size_t(ms), -1), next_piece(p.size(), 0) {}
  void fail(const std::string& m) {
    if (err.empty()) err = m;
  }
  void slot(int s, int64_t t) {
    if (s < 0 || s >= max_slots) return fail(fo_test::fmt("tensor %lld put in slot %d of %d", (long long)t, s, max_slots));
    if (pieces[size_t(t)] <= 0) fail(fo_test::fmt("tensor %lld has no piece but got a slot", (long long)t));
    slot_tensor[size_t(s)] = t;
  }
  void block(int b, int s, int32_t piece) {
    if (b != int(pending.size())) fail(fo_test::fmt("block %d out of order", b));
    if (b < 0 || b >= max_blocks) return fail(fo_test::fmt("block %d of at most %d", b, max_blocks));
    if (s < 0 || s >= max_slots || slot_tensor[size_t(s)] < 0) return fail(fo_test::fmt("block %d reads slot %d", b, s));
    pending.emplace_back(s, piece);
  }
  void launch(int nblocks) {
    ++launches;
    if (nblocks < 1 || nblocks > max_blocks || nblocks != int(pending.size()))
      fail(fo_test::fmt("launch of %d blocks (%zu planned, at most %d)", nblocks, pending.size(), max_blocks));
    for (const auto& [s, piece] : pending) {
      const int64_t t = slot_tensor[size_t(s)];
      if (piece != next_piece[size_t(t)])
        fail(fo_test::fmt("tensor %lld: piece %d where %lld was due", (long long)t, piece,
                          (long long)next_piece[size_t(t)]));
      next_piece[size_t(t)] = piece + 1;
    }
    pending.clear();
  }
  void carry(int s) {
    if (s < 0 || s >= max_slots) return fail(fo_test::fmt("carry from slot %d", s));
    slot_tensor[0] = slot_tensor[size_t(s)];
  }
  void finish() {
    if (!pending.empty()) fail("blocks planned but never launched");
    for (size_t t = 0; t < pieces.size(); ++t)
      if (next_piece[t] != (pieces[t] > 0 ? pieces[t] : 0))
        fail(fo_test::fmt("tensor %zu: %lld of %lld pieces launched", t, (long long)next_piece[t], (long long)pieces[t]));
  }
};

std::string plan(const PieceKernel& k, int max_slots, const std::vector<int64_t>& pieces) {
  Recorder r(max_slots, k.max_blocks, pieces);
  plan_pieces(int64_t(pieces.size()), [&](int64_t t) { return pieces[size_t(t)]; }, max_slots, k.max_blocks, r);
  r.finish();
  if (k.threads > k.bound || k.threads > kMaxBlockThreads || r.launches > kMaxGridX)
    r.fail(fo_test::fmt("block of %d threads, launch bounds %d", k.threads, k.bound));
  return r.err;
}

// Pieces per tensor of each size class (chunks of kChunk elements; 0 = an empty tensor).
struct SizeClass {
  const char* name;
  int64_t (*pieces)(int64_t t);
  bool heavy;  // hundreds of pieces per tensor: counts 1..64 and 5,000 only
};
int64_t chunks(int64_t n) { return (n + kChunk - 1) / kChunk; }
const SizeClass kClasses[] = {
    {"empty", [](int64_t) { return int64_t(0); }, false},
    {"one element", [](int64_t) { return chunks(1); }, false},
    {"4096 elements", [](int64_t) { return chunks(4096); }, false},
    {"one chunk", [](int64_t) { return chunks(kChunk); }, false},
    {"a chunk and one", [](int64_t) { return chunks(kChunk + 1); }, false},
    {"mixed with empties", [](int64_t t) { return t % 3 == 0 ? int64_t(0) : chunks(1 + (t * 7919) % (3 * kChunk)); }, false},
    {"one large among small", [](int64_t t) { return t == 7 ? chunks(320 * kChunk + 12345) : chunks(33); }, false},
    {"321 chunks each", [](int64_t) { return chunks(320 * kChunk + 1); }, true},
};

void check_pieces(const PieceKernel& k, int max_slots) {
  for (const SizeClass& c : kClasses) {
    std::vector<int64_t> pieces;
    std::string err;
    for (int64_t n = 1; n <= kMaxCount && err.empty(); ++n) {
      pieces.push_back(c.pieces(n - 1));
      if (c.heavy && n > 64 && n < kMaxCount) continue;
      err = plan(k, max_slots, pieces);
      if (!err.empty()) err = fo_test::fmt("%s, %d slots, size class '%s', %lld tensors: ", k.name, max_slots, c.name,
                                           (long long)n) + err;
    }
    CHECK_MSG(err.empty(), "%s", err.c_str());
  }
}

template <int D>
void check_mta_plans() {
  if constexpr (D <= kMtaMaxDepth) {
    check_pieces(kMta, TensorListMeta<D>::kMaxTensors);
    check_mta_plans<D + 1>();
  }
}

TEST_CASE(multi_tensor_apply_launches_cover_every_chunk_within_limits) { check_mta_plans<2>(); }

// mta_kernel's blocks find their slot and chunk from first_block / first_chunk (MtaBlockMap fills them,
// mta_slot_of searches them on the device): for every block of every launch, the answer must be what the
// planner assigned. With a small block limit too, so tensors carry over between launches.
struct MapChecker {
  using Meta = TensorListMeta<4>;
  Meta m{};
  MtaBlockMap<Meta> map{};
  std::vector<std::pair<int, int32_t>> want;  // (slot, chunk) of each block of the launch being built
  std::string err;
  void slot(int, int64_t) {}
  void block(int b, int s, int32_t chunk) {
    map.on_block(m, b, s, chunk);
    want.emplace_back(s, chunk);
  }
  void launch(int nblocks) {
    map.on_launch(m, nblocks);
    for (int b = 0; b < nblocks && err.empty(); ++b) {
      const int s = mta_slot_of(m.first_block, m.nslots, b);
      const int32_t c = m.first_chunk[s] + (b - m.first_block[s]);
      if (s != want[size_t(b)].first || c != want[size_t(b)].second)
        err = fo_test::fmt("block %d: slot %d chunk %d, planned slot %d chunk %d", b, s, c, want[size_t(b)].first,
                           want[size_t(b)].second);
    }
    want.clear();
    map.after_launch();
  }
  void carry(int) {}
};

TEST_CASE(multi_tensor_blocks_find_their_slot_and_chunk) {
  for (int max_blocks : {7, 320, kMta.max_blocks}) {
    for (const SizeClass& c : kClasses) {
      std::string err;
      for (int64_t n : {int64_t(1), int64_t(2), int64_t(37), int64_t(500), int64_t(kMaxCount)}) {
        MapChecker k;
        plan_pieces(n, [&](int64_t t) { return c.pieces(t); }, TensorListMeta<4>::kMaxTensors, max_blocks, k);
        if (!k.err.empty()) {
          err = fo_test::fmt("max_blocks %d, size class '%s', %lld tensors: ", max_blocks, c.name, (long long)n) + k.err;
          break;
        }
      }
      CHECK_MSG(err.empty(), "%s", err.c_str());
    }
  }
}

TEST_CASE(reduction_and_adafactor_piece_launches_cover_every_piece_within_limits) {
  check_pieces(kRedPieces, kRedPieces.max_slots);
  check_pieces(kAfPieces, kAfPieces.max_slots);
}

TEST_CASE(adafactor_factor_launches_fit) {
  for (int64_t batch : {int64_t(1), int64_t(5), int64_t(kAfFactorBlocks), int64_t(kAfFactorBlocks + 1), int64_t(1000)}) {
    std::string err;
    for (int64_t n = 1; n <= kMaxCount && err.empty(); n += (n < 100 ? 1 : 37)) {
      int slots_used = 0, blocks = 0;
      int64_t covered = 0;
      struct Sink {
        int& slots_used;
        int& blocks;
        int64_t& covered;
        std::string& err;
        void slot(int s, int64_t, int nb) {
          if (s != slots_used || s >= kAfFactor.max_slots || nb < 1 || nb > kAfFactorBlocks)
            err = fo_test::fmt("slot %d (%d blocks)", s, nb);
          ++slots_used;
          ++covered;
        }
        void block(int b, int s, int j) {
          if (b != blocks || b >= kAfFactor.max_blocks || s >= kAfFactor.max_slots || j >= kAfFactorBlocks || j > 255)
            err = fo_test::fmt("block %d slot %d j %d", b, s, j);
          ++blocks;
        }
        void launch(int nblocks) {
          if (nblocks != blocks || nblocks < 1 || nblocks > kAfFactor.max_blocks) err = fo_test::fmt("launch %d", nblocks);
          slots_used = blocks = 0;
        }
      };
      plan_factor_blocks(n, [&](int64_t t) { return t % 4 == 3 ? int64_t(0) : batch; },
                         Sink{slots_used, blocks, covered, err});
      const int64_t want = n - n / 4;
      if (err.empty() && covered != want) err = fo_test::fmt("covered %lld of %lld", (long long)covered, (long long)want);
      if (!err.empty()) err = fo_test::fmt("batch %lld, %lld tensors: ", (long long)batch, (long long)n) + err;
    }
    CHECK_MSG(err.empty(), "%s", err.c_str());
  }
  CHECK(kAfFactor.threads <= kAfFactor.bound && kAfFactor.max_blocks <= 255 * kAfFactorBlocks);
}

// Adafactor's workspace (adafactor_plan.h): the regions do not overlap, every factored tensor's column
// partials lie in one row/col group whose partials fit the region (and the cap, unless the tensor is
// alone in its group), groups cover the tensors in order, and the pieces and floats are laid out in order.
TEST_CASE(adafactor_workspace_layout) {
  struct Shape {
    int64_t batch, rows, cols;
    bool factored;
  };
  // GPT-2-like matrices, a wide one (64-row pieces), conv-like batches, vectors, empties, and matrices
  // whose partials alone exceed the group cap
  const std::vector<std::vector<Shape>> sets = {
      {{1, 50257, 768, true}, {1, 1, 768, false}, {1, 768, 2304, true}, {1, 768, 768, true}, {1, 1, 3072, false}},
      {{1, 768, 50257, true}, {192, 7, 7, true}, {1, 0, 5, true}, {1, 1, 0, false}, {12, 64, 64, true}},
      {{1, 4096, 32000, true}, {1, 4096, 32000, true}, {1, 11008, 4096, true}, {1, 1, 4096, false},
       {1, 4096, 4096, true}},
  };
  for (size_t si = 0; si < sets.size(); ++si) {
    for (int reps : {1, 3, 40}) {
      std::vector<AfTensor> ts;
      for (int r = 0; r < reps; ++r)
        for (const Shape& sh : sets[si]) {
          AfTensor t{};
          t.batch = sh.batch;
          t.rows = sh.rows;
          t.cols = sh.cols;
          t.numel = sh.batch * sh.rows * sh.cols;
          t.factored = sh.factored;
          ts.push_back(t);
        }
      AfArgs a{};
      a.tensors = ts.data();
      a.ntensors = int64_t(ts.size());
      const AfLayout L = af_layout(a);
      const int64_t n = a.ntensors, rc_size = L.floats - L.rc_ws;
      std::string err;
      auto fail = [&](const std::string& what) {
        if (err.empty()) err = fo_test::fmt("set %zu x%d: ", si, reps) + what;
      };
      if (!(0 == L.red_ws && L.red_ws < L.psq && L.psq + n <= L.ctx && L.ctx < L.part &&
            L.part + (L.npieces > 0 ? L.npieces : 1) <= L.rc_ws && L.rc_ws < L.floats && L.floats < L.total))
        fail("regions out of order");
      if (L.rc_groups.size() < 2 || L.rc_groups.front() != 0 || L.rc_groups.back() != n) fail("groups do not cover");
      for (size_t k = 0; k + 1 < L.rc_groups.size(); ++k) {
        const int64_t g0 = L.rc_groups[k], g1 = L.rc_groups[k + 1];
        if (g1 <= g0) fail("empty group");
        int64_t next = 0, factored = 0;
        for (int64_t t = g0; t < g1; ++t) {
          const AfTensor& at = ts[size_t(t)];
          if (!(at.factored && at.numel > 0)) {
            if (L.rc_base[size_t(t)] != -1) fail(fo_test::fmt("tensor %lld has partials", (long long)t));
            continue;
          }
          if (L.rc_base[size_t(t)] != next) fail(fo_test::fmt("tensor %lld: partials at %lld, expected %lld", (long long)t,
                                                                (long long)L.rc_base[size_t(t)], (long long)next));
          next += rowcol_workspace(at.batch, at.rows, at.cols);
          ++factored;
        }
        if (next > rc_size) fail(fo_test::fmt("group %zu needs %lld doubles, region %lld", k, (long long)next,
                                              (long long)rc_size));
        if (next > kAfRowColGroupDoubles && factored > 1) fail(fo_test::fmt("group %zu over the cap", k));
        if (k > 0) {  // a group is closed only when the next tensor would not fit
          int64_t prev = 0, first_w = 0;
          for (int64_t t = L.rc_groups[k - 1]; t < g0; ++t)
            if (ts[size_t(t)].factored && ts[size_t(t)].numel > 0)
              prev += rowcol_workspace(ts[size_t(t)].batch, ts[size_t(t)].rows, ts[size_t(t)].cols);
          for (int64_t t = g0; t < g1 && first_w == 0; ++t)
            if (ts[size_t(t)].factored && ts[size_t(t)].numel > 0)
              first_w = rowcol_workspace(ts[size_t(t)].batch, ts[size_t(t)].rows, ts[size_t(t)].cols);
          if (!(prev + first_w > kAfRowColGroupDoubles)) fail(fo_test::fmt("group %zu closed early", k - 1));
        }
      }
      int64_t piece = 0, fl = 0;
      for (int64_t t = 0; t < n; ++t) {
        const AfTensor& at = ts[size_t(t)];
        if (L.piece_base[size_t(t)] != piece) fail(fo_test::fmt("tensor %lld: pieces out of order", (long long)t));
        piece += af_pieces(at);
        if (at.factored && at.numel > 0) {
          if (L.fac[size_t(t)] != fl) fail(fo_test::fmt("tensor %lld: floats out of order", (long long)t));
          fl += af_floats(at);
        }
      }
      if (piece != L.npieces || (fl + 1) / 2 > L.total - L.floats) fail("pieces or floats overflow");
      CHECK_MSG(err.empty(), "%s", err.c_str());
    }
  }
}

TEST_CASE(grid_stride_kernels_fit) {
  for (const GridKernel* k : {&kQ8Codec, &kRowColFill}) {
    CHECK_MSG(k->threads <= k->bound && k->threads <= kMaxBlockThreads && k->threads % kWarp == 0, "%s", k->name);
    for (int64_t n : {int64_t(0), int64_t(1), int64_t(255), int64_t(257), int64_t(1) << 31, (int64_t(1) << 40) + 3}) {
      const int64_t g = grid_for(*k, blocks_of(n, k->threads));
      CHECK_MSG(g >= 1 && g <= k->max_grid && g <= kMaxGridX, "%s: %lld elements -> grid %lld", k->name, (long long)n,
                (long long)g);
    }
  }
}

}  // namespace

int main(int argc, char** argv) { return fo_test::run_all(argc, argv); }
