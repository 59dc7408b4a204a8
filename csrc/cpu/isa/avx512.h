// AVX-512 (F/BW/VL/DQ) kernels with 512-bit vectors, chosen at run time when the CPU has them.
#define FO_ISA avx512
#define FO_ISA_TARGET "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c,prefer-vector-width=512"
#define FO_ISA_AVX512 1  // q8_block.h: the target pragma does not define __AVX*__ in C++
