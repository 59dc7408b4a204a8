// The CPU reduction engine (core/reduce.h), compiled once per ISA inside kernels_impl.h.
// torch-free.
//
// multi-tensor reduce: work items are the kChunk pieces of every tensor; one OpenMP region over
// all items; each item reduces its elements into kLanes fp64 lanes (element j of the item goes to
// lane j % kLanes: the inner loop over the lanes vectorises) and folds them by a fixed pairwise tree
// into partial[item]. Then, serially, each tensor folds its items' partials in order, and the total
// folds the tensors in order. Nothing depends on which thread ran an item.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <type_traits>

#include "../core/reduce.h"
#include "../core/storage.h"

namespace fusedopt::cpu::FO_ISA {

// Software prefetch. One core reading one array sequentially keeps too few cache lines in flight to
// reach the memory's bandwidth (a 2-core AMD EPYC: 38 GB/s for a sum of squares on one core, 42-47
// with lines fetched kPrefetchBytes ahead), so the streaming loops ask for them early.
constexpr int64_t kPrefetchBytes = 8192;

// Prefetch the cache lines of elements [i, i + kLanes) of a plain store, kPrefetchBytes ahead.
template <class S>
inline void prefetch_lanes(const S& s, int64_t i) {
  constexpr int64_t esize = int64_t(sizeof(*s.p));
  const char* at = reinterpret_cast<const char*>(s.p + i) + kPrefetchBytes;
  for (int64_t off = 0; off < kLanes * esize; off += 64) __builtin_prefetch(at + off);
}

// ---- lane folds (the per-op traits are core/reduce.h's RedTraits) ------------------------------
// Fold kLanes lanes by a fixed pairwise tree.
template <class Tr>
inline double fold_lanes(double* acc) {
  for (int w = kLanes / 2; w > 0; w /= 2)
    for (int j = 0; j < w; ++j) acc[j] = Tr::combine(acc[j], acc[j + w]);
  return acc[0];
}

// Reduce elements [b, e) of one list: f(load(i)) into lanes, folded. `Load` returns a double.
template <class Tr, class Load>
inline double reduce_range(const Load& ld, int64_t b, int64_t e, double p) {
  double acc[kLanes];
  for (int j = 0; j < kLanes; ++j) acc[j] = Tr::init();
  int64_t i = b;
  for (; i + kLanes <= e; i += kLanes) {
    prefetch_lanes(ld.s, i);
    double v[kLanes];
    for (int j = 0; j < kLanes; ++j) v[j] = Tr::map(ld(i + j), p);
    for (int j = 0; j < kLanes; ++j) acc[j] = Tr::combine(acc[j], v[j]);
  }
  for (int j = 0; i < e; ++i, ++j) acc[j] = Tr::combine(acc[j], Tr::map(ld(i), p));
  return fold_lanes<Tr>(acc);
}

// The contiguous block of [0, n) that schedule(static) without a chunk size gives thread `id` of
// `nt` (the first n % nt threads get one more): a loop can then walk its block in another order.
inline void static_block(int64_t n, int64_t nt, int64_t id, int64_t* lo, int64_t* hi) {
  const int64_t q = n / nt, rem = n % nt;
  *lo = id * q + (id < rem ? id : rem);
  *hi = *lo + q + (id < rem ? 1 : 0);
}

// One element widened to fp64, after the fp32 (fp64 for fp64 data) unscale.
template <class S, bool kScaled>
struct ScaledLoad {
  S s;
  float scale;
  double operator()(int64_t i) const {
    if constexpr (kScaled) {
      if constexpr (std::is_same_v<decltype(s.load(0)), double>) {
        return s.load(i) / double(scale);
      } else {
        return double(s.load(i) / scale);
      }
    } else {
      return double(s.load(i));
    }
  }
};

template <class S, RedOp Op, bool kScaled>
void reduce_typed(const ReduceArgs& a) {
  using Tr = RedTraits<Op>;
  const int64_t n = a.ntensors;
  int64_t nitems = 0, total = 0;
  for (int64_t t = 0; t < n; ++t) {
    nitems += num_chunks(a.numel[t]);
    total += a.numel[t];
  }
  struct Piece {
    int64_t t, b, e;
  };
  Piece* items = static_cast<Piece*>(std::malloc(sizeof(Piece) * size_t(nitems > 0 ? nitems : 1)));
  double* part = static_cast<double*>(std::malloc(sizeof(double) * size_t(nitems > 0 ? nitems : 1)));
  int64_t w = 0;
  for (int64_t t = 0; t < n; ++t)
    for (int64_t b = 0; b < a.numel[t]; b += kChunk)
      items[w++] = Piece{t, b, b + kChunk < a.numel[t] ? b + kChunk : a.numel[t]};
  const float scale = kScaled ? *a.grad_scale : 1.0f;
  const int nthreads = total < 32768 ? 1 : (a.nthreads > 0 ? a.nthreads : 1);
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1)
  for (int64_t i = 0; i < nitems; ++i) {
    ScaledLoad<S, kScaled> ld{make_plain<S>(const_cast<void*>(a.data[items[i].t])), scale};
    part[i] = reduce_range<Tr>(ld, items[i].b, items[i].e, a.p);
  }
  // stage 2: fixed-order folds
  double tot = Tr::init();
  double nz_norms = 0.0;  // p = 0 norm of the per-tensor norms: tensors with a non-zero count
  int64_t k = 0;
  for (int64_t t = 0; t < n; ++t) {
    double r = Tr::init();
    for (int64_t c = num_chunks(a.numel[t]); c > 0; --c) r = Tr::combine(r, part[k++]);
    tot = Tr::combine(tot, r);
    nz_norms += r != 0.0 ? 1.0 : 0.0;
    const double out = a.norm ? red_norm<Op>(r, a.p) : r;
    if (a.per_tensor) a.per_tensor[t] = float(out);
    if (a.per_tensor64) a.per_tensor64[t] = out;
  }
  if (a.norm) tot = Op == RedOp::CountNz ? nz_norms : red_norm<Op>(tot, a.p);
  if (a.total) *a.total = float(tot);
  if (a.total64) *a.total64 = tot;
  std::free(part);
  std::free(items);
}

template <class S>
void reduce_op(const ReduceArgs& a) {
  with_red_op_scaled(a, [&]<RedOp Op, bool kScaled>() { reduce_typed<S, Op, kScaled>(a); });
}

inline void reduce_dispatch(const ReduceArgs& a) {
  switch (a.dt) {
    case Dt::F32: return reduce_op<F32Store<float>>(a);
    case Dt::F64: return reduce_op<F64Store<double>>(a);
    case Dt::F16: return reduce_op<F16Store<float>>(a);
    case Dt::BF16: return reduce_op<BF16Store<float>>(a);
    default: return;
  }
}


// ---- row / col sums ----------------------------------------------------------------------------
// Pieces: (matrix b, block of row_block(C) rows). A piece writes the row sums of its rows (each row
// reduced in lanes, as above) and the fp64 column sums over its rows into workspace[piece][C]
// (rows added in order). Then, per (matrix, column), the pieces' partials are added in order.
template <class S, bool kSquare>
void rowcol_typed(const RowColArgs& a) {
  const int64_t B = a.batch, R = a.rows, C = a.cols;
  if (B == 0 || R == 0 || C == 0) {
    // empty: sums are 0 (means of nothing: 0/0 = nan, as torch's mean of an empty dim)
    const double rv = a.mean && C == 0 ? std::nan("") : 0.0, cv = a.mean && R == 0 ? std::nan("") : 0.0;
    for (int64_t i = 0; i < B * R; ++i) a.row_out[i] = float(rv);
    for (int64_t i = 0; i < B * C; ++i) a.col_out[i] = float(cv);
    return;
  }
  const int64_t rb = row_block(C);
  const int64_t per_mat = (R + rb - 1) / rb;
  const int64_t npieces = B * per_mat;
  const double add = a.add;
  const double inv_c = a.mean ? 1.0 / double(C) : 1.0, inv_r = a.mean ? 1.0 / double(R) : 1.0;
  const S src = make_plain<S>(const_cast<void*>(a.data));
  const int nthreads = B * R * C < 32768 ? 1 : (a.nthreads > 0 ? a.nthreads : 1);
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1)
  for (int64_t pc = 0; pc < npieces; ++pc) {
    const int64_t b = pc / per_mat, r0 = (pc % per_mat) * rb;
    const int64_t r1 = r0 + rb < R ? r0 + rb : R;
    double* colp = a.workspace + pc * C;
    for (int64_t c = 0; c < C; ++c) colp[c] = 0.0;
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t base = (b * R + r) * C;
      auto u = [&](int64_t i) {
        const double x = double(src.load(i));
        if constexpr (kSquare) return x * x + add; else return x + add;
      };
      double acc[kLanes];
      for (int j = 0; j < kLanes; ++j) acc[j] = 0.0;
      int64_t c = 0;
      for (; c + kLanes <= C; c += kLanes) {
        prefetch_lanes(src, base + c);
        double v[kLanes];
        for (int j = 0; j < kLanes; ++j) v[j] = u(base + c + j);
        for (int j = 0; j < kLanes; ++j) acc[j] += v[j];
        for (int j = 0; j < kLanes; ++j) colp[c + j] += v[j];
      }
      for (int j = 0; c < C; ++c, ++j) {
        const double v = u(base + c);
        acc[j] += v;
        colp[c] += v;
      }
      a.row_out[b * R + r] = float(fold_lanes<RedTraits<RedOp::SumSq>>(acc) * inv_c);
    }
  }
  const int64_t ncols = B * C;
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1)
  for (int64_t bc = 0; bc < ncols; ++bc) {
    const int64_t b = bc / C, c = bc % C;
    double s = 0.0;
    for (int64_t k = 0; k < per_mat; ++k) s += a.workspace[(b * per_mat + k) * C + c];
    a.col_out[bc] = float(s * inv_r);
  }
}

template <class S>
void rowcol_sq(const RowColArgs& a) {
  if (a.square) return rowcol_typed<S, true>(a);
  return rowcol_typed<S, false>(a);
}

inline void rowcol_dispatch(const RowColArgs& a) {
  switch (a.dt) {
    case Dt::F32: return rowcol_sq<F32Store<float>>(a);
    case Dt::F64: return rowcol_sq<F64Store<double>>(a);
    case Dt::F16: return rowcol_sq<F16Store<float>>(a);
    case Dt::BF16: return rowcol_sq<BF16Store<float>>(a);
    default: return;
  }
}

// ---- clip (x *= coef) -------------------------------------------------------------------------
template <class S>
void clip_typed(const ClipArgs& a) {
  using T = decltype(make_plain<S>(nullptr).load(0));
  const float coef = clip_coef(*a.total, a.max_norm, a.eps);
  int64_t nitems = 0, total = 0;
  for (int64_t t = 0; t < a.ntensors; ++t) {
    nitems += num_chunks(a.numel[t]);
    total += a.numel[t];
  }
  int64_t* it = static_cast<int64_t*>(std::malloc(sizeof(int64_t) * 2 * size_t(nitems > 0 ? nitems : 1)));
  int64_t w = 0;
  for (int64_t t = 0; t < a.ntensors; ++t)
    for (int64_t b = 0; b < a.numel[t]; b += kChunk) {
      it[2 * w] = t;
      it[2 * w + 1] = b;
      ++w;
    }
  const int nthreads = total < 32768 ? 1 : (a.nthreads > 0 ? a.nthreads : 1);
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1)
  for (int64_t i = 0; i < nitems; ++i) {
    const int64_t t = it[2 * i], b = it[2 * i + 1];
    const int64_t e = b + kChunk < a.numel[t] ? b + kChunk : a.numel[t];
    const S s = make_plain<S>(a.data[t]);
    const T c = T(coef);
#pragma GCC ivdep
    for (int64_t j = b; j < e; ++j) s.store(j, s.load(j) * c);
  }
  std::free(it);
}

inline void clip_dispatch(const ClipArgs& a) {
  switch (a.dt) {
    case Dt::F32: return clip_typed<F32Store<float>>(a);
    case Dt::F64: return clip_typed<F64Store<double>>(a);
    case Dt::F16: return clip_typed<F16Store<float>>(a);
    case Dt::BF16: return clip_typed<BF16Store<float>>(a);
    default: return;
  }
}

}  // namespace fusedopt::cpu::FO_ISA
