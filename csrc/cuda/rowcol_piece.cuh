// The body of one row/col piece, shared by the reduction engine's row_col (reduce.cu) and Adafactor's
// one-launch row/col kernel (adafactor.cu), so both give the same sums: rows [r0, r1) of matrix b of a
// [batch, rows, cols] tensor. Warps take rows (lanes stride the columns, a fixed shuffle tree) and
// write row_out[b * rows + r] = float(sum * inv_c); threads take columns (the piece's rows in order)
// and write the fp64 column sums to col_out[c]. Each element counts as x^2 + add (kSquare) or x + add.
// torch-free.
#pragma once
#include <cstdint>

#include "launch_plan.h"

namespace fusedopt::cuda {

template <class S, bool kSquare>
__device__ __forceinline__ double rc_u(const S& s, int64_t i, double add) {
  const double x = double(s.load(i));
  if constexpr (kSquare) return x * x + add; else return x + add;
}

template <int kThreads, class S, bool kSquare>
__device__ __forceinline__ void rowcol_piece(const S& s, int64_t b, int64_t r0, int64_t r1, int64_t rows, int64_t cols,
                                             double add, double inv_c, float* row_out, double* col_out) {
  static_assert(kThreads % kWarp == 0, "whole warps");
  const int lane = int(threadIdx.x) % kWarp, warp = int(threadIdx.x) / kWarp;
  constexpr int kWarps = kThreads / kWarp;
  for (int64_t r = r0 + warp; r < r1; r += kWarps) {
    const int64_t base = (b * rows + r) * cols;
    double acc = 0.0;
    for (int64_t c = lane; c < cols; c += kWarp) acc += rc_u<S, kSquare>(s, base + c, add);
    for (int w = kWarp / 2; w > 0; w /= 2) acc += __shfl_down_sync(0xffffffffu, acc, w);
    if (lane == 0) row_out[b * rows + r] = float(acc * inv_c);
  }
  for (int64_t c = threadIdx.x; c < cols; c += kThreads) {
    double acc = 0.0;
    for (int64_t r = r0; r < r1; ++r) acc += rc_u<S, kSquare>(s, (b * rows + r) * cols + c, add);
    col_out[c] = acc;
  }
}

}  // namespace fusedopt::cuda
