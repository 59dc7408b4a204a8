// Every CUDA kernel's launch in one CUDA-free header: the metadata each kernel takes by value, its
// block size and launch bounds, and the host planners that cut one call into launches. The .cu files
// launch exactly what these planners give. tests/cpp/test_launch_plan.cpp runs the same planners on
// the host (g++, no GPU) for every tensor count from 1 to 5,000 and every size class, and checks each
// launch against its kernel's bounds and the kernel-argument budget: a launch outside them fails
// only at run time, with cudaErrorInvalidValue, which no CPU test would otherwise see.
//
// Two kinds of kernel:
//   batch kernels   one thread per tensor, up to `per_launch` tensors per launch, one block of
//                   batch_threads(n) threads (whole warps); `bound` is the kernel's __launch_bounds__.
//   piece kernels   one block per piece (a chunk of kChunk elements, or a run of matrix rows) of many
//                   tensors, up to `max_slots` tensors and `max_blocks` blocks per launch
//                   (plan_pieces); a tensor whose pieces do not all fit continues in slot 0 of the
//                   next launch [carry over].
#pragma once
#include <cstddef>
#include <cstdint>

#include "../core/adafactor.h"
#include "../core/config.h"

namespace fusedopt::cuda {

// ---- device limits (compute capability 7.0 and later) ---------------------------------------------
constexpr int kArgBytes = 4096;  // the classic kernel-argument limit: the batch kernels keep to it
constexpr int kWarp = 32;
constexpr int kMaxBlockThreads = 1024;
constexpr int64_t kMaxGridX = 2147483647;

// ---- batch kernels ----------------------------------------------------------------------------------
struct BatchKernel {
  const char* name;
  int per_launch;  // tensors per launch (the metadata's array extent)
  int bound;       // __launch_bounds__ of the kernel
};

constexpr int batch_threads(int n) { return (n + kWarp - 1) / kWarp * kWarp; }

// f(first, n, threads): tensors [first, first + n) in one launch of `threads` threads.
template <class F>
void for_each_batch(const BatchKernel& k, int64_t ntensors, F&& f) {
  for (int64_t t0 = 0; t0 < ntensors; t0 += k.per_launch) {
    const int64_t left = ntensors - t0;
    const int n = int(left < k.per_launch ? left : k.per_launch);
    f(t0, n, batch_threads(n));
  }
}

inline constexpr BatchKernel kStepBump{"step_bump_kernel", 480, 480};
inline constexpr BatchKernel kAuxPass{"aux_kernel", 224, 224};
inline constexpr BatchKernel kRedOutFold{"red_out_kernel", 128, 128};
inline constexpr BatchKernel kCombine{"reduce combine_kernel", 128, 128};
inline constexpr BatchKernel kAfTensors{"adafactor scalar_kernel / clip_kernel", 64, 64};

struct StepBumpArgs {
  void* step[kStepBump.per_launch];
  const float* found_inf;
  int n;
  bool f64;
};

struct AuxArgs {
  double hyper[kMaxHyper];
  void* step[kAuxPass.per_launch];
  float* aux[kAuxPass.per_launch];
  const float* found_inf;
  int n;
  bool f64;
};

struct RedOutArgs {
  float* out[kRedOutFold.per_launch];
  int64_t base[kRedOutFold.per_launch];     // first partial of the tensor (in units of k outputs)
  int64_t nchunks[kRedOutFold.per_launch];
  const double* partials;
  const float* found_inf;
  int n, k;
};

struct CombineArgs {
  int64_t chunk_base[kCombine.per_launch];
  int64_t nchunks[kCombine.per_launch];
  int64_t first;  // index of the first tensor of this launch
  int n;
};

// What adafactor's per-tensor kernels read of tensors [first, first + n).
struct AfTensorMeta {
  float* step[kAfTensors.per_launch];
  float* rms[kAfTensors.per_launch];
  int64_t numel[kAfTensors.per_launch];
  int64_t piece_base[kAfTensors.per_launch];
  int64_t npieces[kAfTensors.per_launch];
  int64_t first;
  int n;
};

// ---- piece kernels ----------------------------------------------------------------------------------
struct PieceKernel {
  const char* name;
  int max_slots;   // tensors per launch (metadata slots)
  int max_blocks;  // blocks per launch (the block maps' extent)
  int threads;     // block size
  int bound;       // __launch_bounds__ of the kernel
};

// Walks the tensors in order, skips those with no piece, and gives each piece one block:
//   sink.slot(slot, t)         tensor t occupies metadata slot `slot`
//   sink.block(b, slot, piece) block b of the launch being built takes piece `piece` of that slot's tensor
//   sink.launch(nblocks)       the metadata is complete: launch nblocks blocks
//   sink.carry(slot)           the tensor in `slot` continues in slot 0 of the next launch
// pieces(t) is the number of pieces of tensor t (0: nothing to do). Piece numbers fit in int32
// (the caller refuses larger tensors before planning).
template <class Pieces, class Sink>
void plan_pieces(int64_t ntensors, const Pieces& pieces, int max_slots, int max_blocks, Sink&& sink) {
  int slot = 0, nblocks = 0;
  for (int64_t t = 0; t < ntensors; ++t) {
    const int64_t np = pieces(t);
    if (np <= 0) continue;
    sink.slot(slot, t);
    for (int64_t k = 0; k < np; ++k) {
      sink.block(nblocks, slot, int32_t(k));
      ++nblocks;
      const bool done = k == np - 1;
      if (nblocks == max_blocks || (done && slot + 1 == max_slots)) {
        sink.launch(nblocks);
        nblocks = 0;
        if (done) {
          slot = -1;  // the next tensor starts at slot 0 (after the ++ below)
        } else {
          sink.carry(slot);
          slot = 0;
        }
      }
    }
    ++slot;
  }
  if (nblocks > 0) sink.launch(nblocks);
}

// The multi-tensor apply kernel (mta.cuh): Depth address lists per tensor slot, chunks of a functor's
// kChunkElems elements, one block per chunk. Its metadata lives in the large kernel-argument space of
// CUDA 12.1+ (32,764 bytes, sm_70 and later; every driver that runs CUDA 13 code has it) and holds no
// per-block map: block b finds its slot by a binary search of first_block (uniform across the block,
// served by the constant cache), so one launch takes every chunk of up to kMaxTensors tensors, however
// many blocks that is. (A map of 320 blocks per launch left an H200 a third idle in every launch.)
constexpr int kBigArgBytes = 32764;  // CUDA 12.1+ on sm_70+: the piece kernels' metadata uses it
constexpr int kMtaArgBytes = kBigArgBytes;
inline constexpr PieceKernel kMta{"mta_kernel", 0 /* per depth: TensorListMeta<Depth>::kMaxTensors */, 1 << 24, 512,
                                  512};
constexpr int kMtaFnBytes = 768;  // reserved for the functor (the kernel's second argument; the 8-bit walk's
                                  // carries its two 224-byte segment tables)
constexpr int kMtaMetaBytes = kMtaArgBytes - kMtaFnBytes;
constexpr int64_t kCudaChunk = 16384;  // elements per block of the element passes (kChunk's quarter: 4x the
                                       // blocks, so the last wave of a launch idles less of the GPU)
static_assert(kChunk % kCudaChunk == 0, "a kChunk piece is a whole number of CUDA chunks");

// Slots per launch for `depth` address lists: whatever fits.
constexpr int mta_max_tensors(int depth) {
  const int per_tensor = depth * 8 /*addr*/ + 8 /*numel*/ + 8 /*step*/ + 4 /*index*/ + 4 /*first_block*/ +
                         4 /*first_chunk*/;
  const int n = (kMtaMetaBytes - 16 /*nslots, last first_block, padding*/) / per_tensor;
  return n > 1024 ? 1024 : n;
}

//   addr[d][s]        device address of list d of tensor slot s (d: 0 param, 1 grad, 2.. states,
//                     then any extra list such as the Kahan compensation; the functor decides)
//   numel[s]          int64 element count of slot s
//   step[s]           device pointer to slot s's step counter
//   index[s]          position of slot s in Launch.tensors (seeds of stochastic rounding)
//   first_block[s]    the first block of slot s (first_block[nslots] = the launch's block count)
//   first_chunk[s]    the chunk of slot s's tensor its first block takes (0, or where a tensor carried
//                     over from the previous launch goes on); the element offset is int64(chunk) * chunk size
template <int Depth>
struct TensorListMeta {
  static constexpr int kMaxTensors = mta_max_tensors(Depth);
  void* addr[Depth][kMaxTensors];
  int64_t numel[kMaxTensors];
  void* step[kMaxTensors];
  uint32_t index[kMaxTensors];
  int32_t first_block[kMaxTensors + 1];
  int32_t first_chunk[kMaxTensors];
  int32_t nslots;
};

#if defined(__CUDACC__)
#define FO_LP_HD __host__ __device__ __forceinline__
#else
#define FO_LP_HD inline
#endif

// The slot of block b: the last s < nslots with first_block[s] <= b (first_block rises with s).
FO_LP_HD int mta_slot_of(const int32_t* first_block, int nslots, int b) {
  int lo = 0, hi = nslots - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (first_block[mid] <= b) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

// plan_pieces' sink side of the metadata: call on_slot / on_block / on_launch / on_carry from the sink.
template <class Meta>
struct MtaBlockMap {
  int cur = -1;  // the slot whose blocks are being added
  void on_block(Meta& m, int b, int s, int32_t chunk) {
    if (s != cur) {
      m.first_block[s] = b;
      m.first_chunk[s] = chunk;
      cur = s;
    }
  }
  void on_launch(Meta& m, int nblocks) {
    m.nslots = cur + 1;
    m.first_block[m.nslots] = nblocks;
  }
  void after_launch() { cur = -1; }
};

// The deepest list set: param, grad, 2 x kMaxStates (8-bit codes + absmax), comp, aux, red_in, red_out.
constexpr int kMtaMaxDepth = 2 + 2 * kMaxStates + 4;

// The reduction engine's piece kernels (reduce.cu: partial_kernel, clip_kernel); large arguments too.
inline constexpr PieceKernel kRedPieces{"reduce partial_kernel / clip_kernel", 512, 2240, 512, 512};
struct RedMeta {
  const void* addr[kRedPieces.max_slots];
  int64_t numel[kRedPieces.max_slots];
  int64_t chunk_base[kRedPieces.max_slots];  // index of the tensor's first piece in the workspace
  int32_t block_chunk[kRedPieces.max_blocks];
  uint16_t block_tensor[kRedPieces.max_blocks];
};
constexpr size_t kRedParamBytes = 64;  // the kernels' other arguments (reduce.cu checks)

// Adafactor's pass_kernel (adafactor.cu); large arguments too.
inline constexpr PieceKernel kAfPieces{"adafactor pass_kernel / rowcol_kernel / unscale_kernel", 128, 2240, 512, 512};
struct AfPieceSlot {
  void* p;
  const void* g;
  float* v;         // unfactored: V
  float* m;         // exp_avg (kBeta1) or null
  const float* fl;  // factored: rm, rf, cf, rd
  int64_t numel, batch, rows, cols;
  int64_t piece_base;
  int64_t rc_base;  // factored: its first fp64 column partial in the row/col workspace
  int32_t per_mat;  // pieces per matrix (factored)
  int32_t t;
  bool factored;
};
struct AfPieceMeta {
  AfPieceSlot s[kAfPieces.max_slots];
  int32_t block_piece[kAfPieces.max_blocks];
  uint16_t block_slot[kAfPieces.max_blocks];
};
constexpr size_t kAfPassParamBytes = 64;  // PassArgs (adafactor.cu checks)

// Adafactor's factor_kernel: up to kFactorBlocks blocks share the matrices of one tensor.
inline constexpr PieceKernel kAfFactor{"adafactor factor_kernel", 24, 24 * 32, 512, 512};
constexpr int kAfFactorBlocks = 32;
struct AfFactorSlot {
  float* R;         // state R [B*rows]
  float* C;         // state C [B*cols]
  const float* fl;  // this tensor's floats: rm, rf, cf, rd
  const double* cpart;  // its column partials: [batch * per_mat][cols], folded here into the col means
  int64_t batch, rows, cols, per_mat;
  int32_t t;        // index in the call (ctx)
  int32_t nblocks;  // blocks sharing its matrices: block j takes b = j, j + nblocks, ...
};
struct AfFactorMeta {
  AfFactorSlot s[kAfFactor.max_slots];
  uint8_t block_slot[kAfFactor.max_blocks];
  uint8_t block_j[kAfFactor.max_blocks];
};

// Factor launches: each factored tensor takes min(batch, kAfFactorBlocks) blocks; a launch holds up to
// max_slots tensors. sink.slot(slot, t, nblocks), sink.block(b, slot, j), sink.launch(nblocks).
template <class Batch, class Sink>
void plan_factor_blocks(int64_t ntensors, const Batch& batch_of, Sink&& sink) {
  int slots = 0, blocks = 0;
  for (int64_t t = 0; t < ntensors; ++t) {
    const int64_t b = batch_of(t);  // 0: not factored or empty
    if (b <= 0) continue;
    const int nb = int(b < kAfFactorBlocks ? b : kAfFactorBlocks);
    sink.slot(slots, t, nb);
    for (int j = 0; j < nb; ++j) sink.block(blocks++, slots, j);
    if (++slots == kAfFactor.max_slots) {
      sink.launch(blocks);
      slots = blocks = 0;
    }
  }
  if (blocks > 0) sink.launch(blocks);
}

// Bytes of kernel arguments of adafactor's kernels (metadata, AfArgs by value, pointers).
constexpr size_t kAfTensorArgBytes = sizeof(AfTensorMeta) + sizeof(AfArgs) + 2 * sizeof(void*);  // scalar / clip
constexpr size_t kAfFactorArgBytes = sizeof(AfFactorMeta) + sizeof(AfArgs) + sizeof(void*);
constexpr size_t kAfPassArgBytes = sizeof(AfPieceMeta) + kAfPassParamBytes;

// ---- grid-stride kernels over one buffer ---------------------------------------------------------------
// 8-bit codec (q8.cu) and row/col helpers (reduce.cu): a capped grid of fixed-size blocks.
struct GridKernel {
  const char* name;
  int threads;
  int bound;
  int64_t max_grid;
};
inline constexpr GridKernel kQ8Codec{"q8 quantize / dequantize kernels", 256, 256, 65535 * 16};
inline constexpr GridKernel kRowColFill{"row_col fill / column kernels", 256, 256, kMaxGridX};

constexpr int64_t grid_for(const GridKernel& k, int64_t work_items) {
  const int64_t want = work_items <= 0 ? 1 : work_items;
  return want < k.max_grid ? want : k.max_grid;
}
constexpr int64_t blocks_of(int64_t n, int threads) { return (n + threads - 1) / threads; }

}  // namespace fusedopt::cuda
