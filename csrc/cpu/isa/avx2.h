// AVX2 + FMA + F16C kernels, chosen at run time when the CPU has them.
#define FO_ISA avx2
#define FO_ISA_TARGET "avx2,fma,f16c"
#define FO_ISA_AVX2 1  // q8_block.h: the target pragma does not define __AVX*__ in C++
