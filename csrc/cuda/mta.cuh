// The CUDA multi-tensor apply (MTA) engine: one generic launcher for every rule.
// torch-free: cuda_runtime and the core headers only.
//
// ---- What one op call does ------------------------------------------------------------------
//   1. step bump: `step_bump_kernel` adds 1 to every tensor's step counter (float32, or float64
//      when Launch.step_f64), empty tensors included, once per call. Each thread first reads
//      *found_inf on the device and leaves its counter alone when it is non-zero, so a skipped
//      step changes nothing and the host never syncs. Step pointers travel by value
//      (kStepBump.per_launch per launch, launch_plan.h).
//   2. main pass: `mta_kernel<Depth, Fn>` launches, in stream order after the bump, so every block
//      reads its tensor's already-bumped step. Each block again returns at once when *found_inf
//      != 0, so params, grads and states are untouched on a skipped step (the same gate, evaluated
//      on the same value by both kernels). The per-block functor `Fn` (rule_kernel.cuh) builds the
//      rule's scalars once per block from (hyper, lr or *lr_ptr, step) and streams its chunk.
// Both kernels run on Launch.stream. Launch errors are checked with cudaGetLastError and thrown
// as std::runtime_error. Nothing here syncs with the device, so every call is CUDA-graph capturable.
//
// ---- Metadata (TensorListMeta<Depth>, launch_plan.h, passed BY VALUE as a __grid_constant__ kernel
// argument): Depth address lists per tensor slot, its numel, step pointer and index, and per block its
// slot and chunk. plan_pieces (launch_plan.h) walks the tensors in order, skips empty ones (their step
// was bumped in pass 1), cuts each into chunks of kChunk elements (one block each), and launches
// whenever the blocks (kMaxBlocks = 2,240) or the slots (as many as fit in CUDA 12.1's 32 KB argument
// budget beside a functor of up to kFnBytes) are full; a tensor whose chunks do not all fit continues in
// slot 0 of the next launch.
//
// Inside a block (rule_kernel.cuh): when every list of the tensor is aligned to one vector
// (16 bytes of the widest list), each thread moves that many consecutive elements per list with
// one vector load/store; the chunk's last len % width elements, and whole chunks of unaligned
// tensors, take a strided element loop. Offsets are int64; indices within a chunk are int32.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "../core/config.h"
#include "../core/launch.h"
#include "../core/reduce.h"
#include "../core/storage.h"
#include "launch_plan.h"

#define FO_DEV __device__ __forceinline__

namespace fusedopt::cuda {

constexpr int kBlockThreads = kMta.threads;
constexpr int kMaxBlocks = kMta.max_blocks;
constexpr int kFnBytes = kMtaFnBytes;
constexpr int kMetaBytes = kMtaMetaBytes;

static_assert(sizeof(TensorListMeta<1>) <= kMetaBytes && sizeof(TensorListMeta<kMtaMaxDepth>) <= kMetaBytes,
              "tensor-list metadata must fit in the kernel-argument budget");
#if defined(CUDART_VERSION) && CUDART_VERSION < 12010
#error "mta_kernel's metadata needs CUDA 12.1 or later (kernel arguments of up to 32,764 bytes)"
#endif
static_assert(TensorListMeta<kMtaMaxDepth>::kMaxTensors >= 8, "too few tensor slots at the largest depth");

// One generic kernel: block b of a launch hands (metadata, b) to the functor. Fn::kMinBlocks asks the
// compiler to fit that many blocks on one SM (registers <= 65536 / (512 x kMinBlocks)).
template <int Depth, class Fn>
__global__ void __launch_bounds__(kMta.bound, Fn::kMinBlocks)
    mta_kernel(const __grid_constant__ TensorListMeta<Depth> meta, const __grid_constant__ Fn fn) {
  fn(meta, int(blockIdx.x));
}

[[noreturn]] inline void throw_cuda(const char* what, const char* stage, cudaError_t err) {
  throw std::runtime_error(std::string("fusedopt CUDA ") + what + ": " + stage + " failed: " +
                           cudaGetErrorName(err) + " (" + cudaGetErrorString(err) +
                           "); an earlier asynchronous CUDA error would also surface here");
}

inline void check_launch(const char* what, const char* stage) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw_cuda(what, stage, err);
}

// Pass 1: bump every step counter of L (gated on *L.found_inf on the device). Defined in api.cu.
void bump_steps(const Launch& L, const char* what);

// plan_pieces' sink of multi_tensor_apply: fills the metadata and launches mta_kernel.
template <int Depth, class Lists, class Fn>
struct MtaSink {
  using Meta = TensorListMeta<Depth>;
  const Launch& L;
  const Fn& fn;
  const char* what;
  cudaStream_t stream;
  Meta meta{};
  MtaBlockMap<Meta> map{};
  void slot(int s, int64_t t) {
    const TensorPtrs& tp = L.tensors[t];
    void* lists[Depth];
    Lists::get(tp, lists);
    for (int d = 0; d < Depth; ++d) meta.addr[d][s] = lists[d];
    meta.numel[s] = tp.numel;
    meta.step[s] = tp.step;
    meta.index[s] = uint32_t(t);
  }
  void block(int b, int s, int32_t chunk) { map.on_block(meta, b, s, chunk); }
  void launch(int nblocks) {
    map.on_launch(meta, nblocks);
    mta_kernel<Depth, Fn><<<nblocks, kBlockThreads, 0, stream>>>(meta, fn);
    check_launch(what, "multi-tensor kernel launch");
    map.after_launch();
  }
  void carry(int s) {
    for (int d = 0; d < Depth; ++d) meta.addr[d][0] = meta.addr[d][s];
    meta.numel[0] = meta.numel[s];
    meta.step[0] = meta.step[s];
    meta.index[0] = meta.index[s];
  }
};

// The block's place in a launch: its slot, and the first element of its chunk.
template <int Depth>
FO_DEV int mta_slot(const TensorListMeta<Depth>& m, int b) {
  return mta_slot_of(m.first_block, m.nslots, b);
}
template <int Depth>
FO_DEV int32_t mta_chunk(const TensorListMeta<Depth>& m, int b, int slot) {
  return m.first_chunk[slot] + (b - m.first_block[slot]);
}

// Pass 2: run `fn` over every element of every non-empty tensor of L.
// `Lists::get(tp, out)` writes the Depth list addresses of one tensor into out[0..Depth).
template <int Depth, class Lists, class Fn>
void multi_tensor_apply(const Launch& L, const Fn& fn, const char* what) {
  static_assert(sizeof(Fn) <= kFnBytes, "functor exceeds its share of the kernel-argument budget");
  using Meta = TensorListMeta<Depth>;
  constexpr int kMaxTensors = Meta::kMaxTensors;
  cudaStream_t stream = static_cast<cudaStream_t>(L.stream);

  constexpr int64_t kCh = Fn::kChunkElems;
  auto chunks_of = [](int64_t n) { return (n + kCh - 1) / kCh; };
  for (int64_t t = 0; t < L.ntensors; ++t) {
    if (chunks_of(L.tensors[t].numel) > int64_t(INT32_MAX))
      throw std::runtime_error(std::string("fusedopt CUDA ") + what + ": tensor " + std::to_string(t) + " has " +
                               std::to_string(L.tensors[t].numel) + " elements, more than the engine's limit");
  }
  MtaSink<Depth, Lists, Fn> sink{L, fn, what, stream};
  plan_pieces(L.ntensors, [&](int64_t t) { return chunks_of(L.tensors[t].numel); }, kMaxTensors, kMaxBlocks, sink);
}

}  // namespace fusedopt::cuda
