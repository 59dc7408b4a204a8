// The host side of Adafactor's CUDA step (adafactor.cu) that needs no CUDA: the layout of its fp64
// workspace (per-tensor regions, pieces, the row/col groups). CUDA-free, so that
// tests/cpp/test_launch_plan.cpp checks it on the host.
#pragma once
#include <cstdint>
#include <vector>

#include "../core/adafactor.h"
#include "../core/reduce.h"
#include "api.h"

namespace fusedopt::cuda {

// ---- the workspace (one fp64 device buffer, laid out by the host) --------------------------------
struct AfLayout {
  int64_t red_ws, psq, ctx, part, rc_ws, floats, total;  // offsets in doubles; total = size
  std::vector<int64_t> piece_base;                       // first piece of tensor t in `part`
  std::vector<int64_t> fac;                              // factored: offset of its floats (in floats)
  std::vector<int64_t> rc_base;                          // factored: its column partials in rc_ws
  std::vector<int64_t> rc_groups;                        // tensors [rc_groups[k], rc_groups[k + 1]): one
                                                         // row/col launch through rc_ws, in turn
  int64_t npieces = 0;
};

// The row/col workspace holds the column partials of a group of tensors (about numel / row_block
// doubles per tensor); groups are closed at this many doubles (32 MiB), so a large model's step needs
// no more than that (or one tensor's partials, when larger) whatever its size.
constexpr int64_t kAfRowColGroupDoubles = int64_t(4) << 20;

// Per-tensor values on the device: the element ctx and the fp64 step size (the CPU divides the fp64
// alpha by the clip divisor, so keep it for clip_kernel).
struct DevCtx {
  AfElemCtx<float> e;
  double alpha;
};
constexpr int64_t ctx_doubles() { return int64_t((sizeof(DevCtx) + 7) / 8); }

inline int64_t af_pieces(const AfTensor& t) {
  if (t.numel == 0) return 0;
  if (!t.factored) return num_chunks(t.numel);
  const int64_t rb = row_block(t.cols);
  return t.batch * ((t.rows + rb - 1) / rb);
}

// floats of a factored tensor: rm[B*R] (row means), rf[B*R], cf[B*C], rd[B] (the col means are folded
// from the column partials where factor_kernel uses them)
inline int64_t af_floats(const AfTensor& t) { return 2 * t.batch * t.rows + t.batch * t.cols + t.batch; }

inline AfLayout af_layout(const AfArgs& a) {
  AfLayout L;
  const int64_t n = a.ntensors;
  int64_t pchunks = 0, rc = 0, rc_max = 0, fl = 0;
  L.rc_groups.push_back(0);
  L.piece_base.resize(size_t(n));
  L.fac.assign(size_t(n), -1);
  L.rc_base.assign(size_t(n), -1);
  for (int64_t t = 0; t < n; ++t) {
    const AfTensor& at = a.tensors[t];
    pchunks += num_chunks(at.numel);
    L.piece_base[size_t(t)] = L.npieces;
    L.npieces += af_pieces(at);
    if (at.factored && at.numel > 0) {
      const int64_t w = rowcol_workspace(at.batch, at.rows, at.cols);
      if (rc > 0 && rc + w > kAfRowColGroupDoubles) {
        L.rc_groups.push_back(t);
        rc = 0;
      }
      L.rc_base[size_t(t)] = rc;
      rc += w;
      rc_max = rc > rc_max ? rc : rc_max;
      L.fac[size_t(t)] = fl;
      fl += af_floats(at);
    }
  }
  int64_t o = 0;
  L.red_ws = o;
  o += reduce_workspace(pchunks, n);
  L.psq = o;
  o += n;
  L.ctx = o;
  o += n * ctx_doubles();
  L.part = o;
  o += L.npieces > 0 ? L.npieces : 1;
  L.rc_ws = o;
  o += rc_max > 0 ? rc_max : 1;
  L.floats = o;
  o += (fl + 1) / 2 + 1;
  L.total = o;
  L.rc_groups.push_back(n);
  return L;
}

}  // namespace fusedopt::cuda
