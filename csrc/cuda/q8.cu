// The standalone block-wise 8-bit codec on CUDA (api.h: q8_quantize / q8_dequantize), torch-free.
// quantize: one CUDA block of 256 threads per quantization block (any block size: strided loops),
// absmax by warp shuffles + shared memory, then the nearest code (core/q8.h q8_encode_search over
// the midpoints in shared memory), as the CPU codec; the optimizer kernels round their states
// stochastically instead (q8_kernel.cuh). Compiled, never run here.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "api.h"
#include "q8_kernel.cuh"

namespace fusedopt::cuda {
namespace {

constexpr int kCodecThreads = kQ8Codec.threads;  // s_mid holds one midpoint per thread
static_assert(kCodecThreads == 256, "one thread per codebook entry");

__global__ void __launch_bounds__(kQ8Codec.bound)
    q8_quantize_kernel(const float* x, int64_t n, int64_t block, int is_signed, uint8_t* codes, float* absmax,
                       int64_t nblocks) {
  __shared__ float s_mid[256];
  __shared__ float s_warp[kCodecThreads / 32];
  __shared__ float s_max;
  s_mid[threadIdx.x] = kQ8DevMids[is_signed][threadIdx.x];
  const float lo = is_signed ? -1.0f : 0.0f;
  for (int64_t b = blockIdx.x; b < nblocks; b += gridDim.x) {
    const int64_t b0 = b * block, e = b0 + block < n ? b0 + block : n;
    float m = 0.0f;
    for (int64_t i = b0 + threadIdx.x; i < e; i += kCodecThreads) m = fmaxf(m, q8_abs_finite(x[i]));
    m = warp_max(m);
    if ((threadIdx.x & 31) == 0) s_warp[threadIdx.x >> 5] = m;
    __syncthreads();
    if (threadIdx.x == 0) {
      float mx = 0.0f;
      for (int w = 0; w < kCodecThreads / 32; ++w) mx = fmaxf(mx, s_warp[w]);
      s_max = mx;
      absmax[b] = mx;
    }
    __syncthreads();
    const float inv = q8_inv(s_max);
    for (int64_t i = b0 + threadIdx.x; i < e; i += kCodecThreads)
      codes[i] = uint8_t(q8_encode_search(s_mid, q8_normalise(x[i], inv, lo)));
    __syncthreads();  // s_warp / s_max are reused by the next block
  }
}

__global__ void __launch_bounds__(kQ8Codec.bound) q8_dequantize_kernel(const uint8_t* codes, const float* absmax, int64_t n, int64_t block,
                                     int is_signed, float* out) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = kQ8DevValues[is_signed][codes[i]] * absmax[i / block];
}

void check(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("fusedopt CUDA ") + what + ": kernel launch failed: " +
                             cudaGetErrorString(err));
}

}  // namespace

void q8_quantize(const float* x, int64_t n, int64_t block, bool is_signed, uint8_t* codes, float* absmax,
                 void* stream) {
  const int64_t nblocks = (n + block - 1) / block;
  const int grid = int(grid_for(kQ8Codec, nblocks));
  q8_quantize_kernel<<<grid, kCodecThreads, 0, static_cast<cudaStream_t>(stream)>>>(x, n, block, is_signed ? 1 : 0,
                                                                                    codes, absmax, nblocks);
  check("quantize_blockwise");
}

void q8_dequantize(const uint8_t* codes, const float* absmax, int64_t n, int64_t block, bool is_signed, float* out,
                   void* stream) {
  const int grid = int(grid_for(kQ8Codec, blocks_of(n, kQ8Codec.threads)));
  q8_dequantize_kernel<<<grid, kQ8Codec.threads, 0, static_cast<cudaStream_t>(stream)>>>(codes, absmax, n, block,
                                                                           is_signed ? 1 : 0, out);
  check("dequantize_blockwise");
}

}  // namespace fusedopt::cuda
