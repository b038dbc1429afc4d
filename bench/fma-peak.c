// The machine's arithmetic peak on T threads: float32 FMA (GFLOP/s), or with `vnni` the int8
// dot-product peak that int8 convolutions run on (vpdpbusd: 64 u8 x s8 products summed into 16
// int32 per instruction; GOP/s, a multiply and an add counted as two, as for the flops). Each
// thread keeps 16 independent chains busy (enough to cover the latency of two ports), so the
// figure is what the cores can do, not what a memory-bound kernel gets.
// build: cc -O2 -march=native -fopenmp fma-peak.c; run: ./a.out THREADS [vnni]
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHAINS 16
#define ITERS 60000000L

static double fp32(int threads, float* sink) {
  float total = 0;
#pragma omp parallel num_threads(threads) reduction(+ : total)
  {
    __m512 acc[CHAINS];
    const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
    for (int c = 0; c < CHAINS; c++) acc[c] = _mm512_set1_ps((float)c);
    for (long i = 0; i < ITERS; i++) {
      for (int c = 0; c < CHAINS; c++) acc[c] = _mm512_fmadd_ps(acc[c], a, b);
    }
    for (int c = 0; c < CHAINS; c++) total += _mm512_reduce_add_ps(acc[c]);
  }
  *sink = total;
  return 2.0 * 16 * CHAINS * (double)ITERS * threads;
}

#ifdef __AVX512VNNI__
static double vnni(int threads, float* sink) {
  long total = 0;
#pragma omp parallel num_threads(threads) reduction(+ : total)
  {
    __m512i acc[CHAINS];
    const __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(-2);
    for (int c = 0; c < CHAINS; c++) acc[c] = _mm512_set1_epi32(c);
    for (long i = 0; i < ITERS; i++) {
      for (int c = 0; c < CHAINS; c++) acc[c] = _mm512_dpbusd_epi32(acc[c], a, b);
    }
    for (int c = 0; c < CHAINS; c++) total += _mm512_reduce_add_epi32(acc[c]);
  }
  *sink = (float)total;
  return 2.0 * 64 * CHAINS * (double)ITERS * threads;
}
#endif

int main(int argc, char** argv) {
  const int threads = argc > 1 ? atoi(argv[1]) : 1;
  const int int8 = argc > 2 && strcmp(argv[2], "vnni") == 0;
  float sink = 0;
  double start = omp_get_wtime(), ops;
  if (int8) {
#ifdef __AVX512VNNI__
    ops = vnni(threads, &sink);
#else
    fprintf(stderr, "this CPU (or compiler) has no AVX-512 VNNI\n");
    return 2;
#endif
  } else {
    ops = fp32(threads, &sink);
  }
  printf("%.1f\n", ops / (omp_get_wtime() - start) / 1e9);
  return sink == 12345.f;  // keeps the arithmetic alive
}
