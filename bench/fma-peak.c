// The machine's float32 FMA peak on T threads: each thread keeps 16 independent AVX-512 FMA
// chains busy (enough to cover the latency of two FMA ports), so the figure is what the cores
// can do, not what a memory-bound kernel gets. Prints GFLOP/s.
// build: cc -O2 -mavx512f -mfma -fopenmp fma-peak.c; run: ./a.out THREADS
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#define CHAINS 16
#define ITERS 60000000L

int main(int argc, char** argv) {
  const int threads = argc > 1 ? atoi(argv[1]) : 1;
  float sink = 0;
  double start = omp_get_wtime();
#pragma omp parallel num_threads(threads) reduction(+ : sink)
  {
    __m512 acc[CHAINS];
    const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
    for (int c = 0; c < CHAINS; c++) acc[c] = _mm512_set1_ps((float)c);
    for (long i = 0; i < ITERS; i++) {
      for (int c = 0; c < CHAINS; c++) acc[c] = _mm512_fmadd_ps(acc[c], a, b);
    }
    for (int c = 0; c < CHAINS; c++) sink += _mm512_reduce_add_ps(acc[c]);
  }
  const double seconds = omp_get_wtime() - start;
  const double flops = 2.0 * 16 * CHAINS * (double)ITERS * threads;
  printf("%.1f\n", flops / seconds / 1e9);
  return sink == 12345.f;  // keeps the arithmetic alive
}
