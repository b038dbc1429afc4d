#include "kernels.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cfloat>

namespace vgg::cuda {

namespace {

__device__ __forceinline__ float toFloat(float v) { return v; }
__device__ __forceinline__ float toFloat(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float toFloat(__half v) { return __half2float(v); }
template <typename T> __device__ __forceinline__ T fromFloat(float v);
template <> __device__ __forceinline__ float fromFloat<float>(float v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 fromFloat<__nv_bfloat16>(float v) { return __float2bfloat16(v); }
template <> __device__ __forceinline__ __half fromFloat<__half>(float v) { return __float2half(v); }

constexpr int kThreads = 256;
inline unsigned blocks(size_t count) { return static_cast<unsigned>((count + kThreads - 1) / kThreads); }

template <typename T> struct Type { using type = T; };
// Calls f with Type<E> for the element type E that t names.
template <typename F>
void dispatch(DType t, F&& f) {
  switch (t) {
    case DType::F32: f(Type<float>{}); break;
    case DType::BF16: f(Type<__nv_bfloat16>{}); break;
    case DType::F16: f(Type<__half>{}); break;
  }
}

template <typename T>
__global__ void inputToNhwcKernel(const float* src, T* dst, int n, int c, int h, int w, int cPad) {
  const size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x;  // over n*h*w*cPad, NHWC order
  if (i >= size_t(n) * h * w * cPad) return;
  const int ch = i % cPad;
  const size_t pixel = i / cPad;
  const int x = pixel % w, y = (pixel / w) % h, b = pixel / (size_t(w) * h);
  dst[i] = fromFloat<T>(ch < c ? src[((size_t(b) * c + ch) * h + y) * w + x] : 0.f);
}

template <typename T>
__global__ void nhwcToNchwKernel(const T* src, float* dst, int n, int c, int h, int w) {
  const size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x;  // over NCHW output
  if (i >= size_t(n) * c * h * w) return;
  const int x = i % w, y = (i / w) % h, ch = (i / (size_t(w) * h)) % c, b = i / (size_t(w) * h * c);
  dst[i] = toFloat(src[((size_t(b) * h + y) * w + x) * c + ch]);
}

template <typename T>
__global__ void packWeightsKernel(const float* oihw, T* dst, int o, int in, int k, int iPad) {
  const size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x;  // over o*k*k*iPad, OHWI order
  if (i >= size_t(o) * k * k * iPad) return;
  const int ci = i % iPad, x = (i / iPad) % k, y = (i / (size_t(iPad) * k)) % k, co = i / (size_t(iPad) * k * k);
  dst[i] = fromFloat<T>(ci < in ? oihw[((size_t(co) * in + ci) * k + y) * k + x] : 0.f);
}

template <typename T>
__global__ void convertKernel(const float* src, T* dst, size_t count) {
  const size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x;
  if (i < count) dst[i] = fromFloat<T>(src[i]);
}

template <typename T>
__global__ void biasActivationKernel(T* y, const T* bias, size_t count, int c, bool relu) {
  const size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x;
  if (i >= count) return;
  const float v = toFloat(y[i]) + toFloat(bias[i % c]);
  y[i] = fromFloat<T>(relu ? fmaxf(v, 0.f) : v);
}

template <typename T>
__global__ void maxPoolKernel(const T* src, T* dst, int n, int h, int w, int c) {
  const int oh = h / 2, ow = w / 2;
  const size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x;  // over the NHWC output
  if (i >= size_t(n) * oh * ow * c) return;
  const int ch = i % c, x = (i / c) % ow, y = (i / (size_t(c) * ow)) % oh, b = i / (size_t(c) * ow * oh);
  const T* p = src + ((size_t(b) * h + 2 * y) * w + 2 * x) * c + ch;
  const size_t row = size_t(w) * c;
  dst[i] = fromFloat<T>(fmaxf(fmaxf(toFloat(p[0]), toFloat(p[c])), fmaxf(toFloat(p[row]), toFloat(p[row + c]))));
}

// PyTorch/Caffe LRN: x / (k + alpha/size * sum over the window of x^2)^beta.
template <typename T>
__global__ void lrnKernel(const T* src, T* dst, size_t pixels, int c, int size, float alpha, float beta, float k) {
  const size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x;
  if (i >= pixels * c) return;
  const int ch = i % c;
  const T* p = src + (i - ch);
  float sum = 0.f;
  for (int j = max(0, ch - (size - 1) / 2); j <= min(c - 1, ch + size / 2); j++) sum += toFloat(p[j]) * toFloat(p[j]);
  dst[i] = fromFloat<T>(toFloat(src[i]) / powf(k + alpha / size * sum, beta));
}

template <typename T>
__global__ void adaptiveAvgPool7Kernel(const T* src, T* dst, int n, int h, int w, int c) {
  const size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x;  // over [n, 7, 7, c]
  if (i >= size_t(n) * 49 * c) return;
  const int ch = i % c, ox = (i / c) % 7, oy = (i / (size_t(c) * 7)) % 7, b = i / (size_t(c) * 49);
  const int y0 = oy * h / 7, y1 = ((oy + 1) * h + 6) / 7, x0 = ox * w / 7, x1 = ((ox + 1) * w + 6) / 7;
  float sum = 0.f;
  for (int y = y0; y < y1; y++)
    for (int x = x0; x < x1; x++) sum += toFloat(src[((size_t(b) * h + y) * w + x) * c + ch]);
  dst[i] = fromFloat<T>(sum / float((y1 - y0) * (x1 - x0)));
}

template <typename T>
__global__ void meanOverSpaceKernel(const T* src, float* dst, int n, int hw, int c) {
  const size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x;  // over [n, c]
  if (i >= size_t(n) * c) return;
  const int ch = i % c, b = i / c;
  float sum = 0.f;
  for (int p = 0; p < hw; p++) sum += toFloat(src[(size_t(b) * hw + p) * c + ch]);
  dst[i] = sum / hw;
}

// One block per row; class counts are small (1000), so a strided loop per thread suffices.
template <typename T>
__global__ void softmaxKernel(const T* src, float* dst, int c) {
  __shared__ float shared[kThreads];
  const T* row = src + size_t(blockIdx.x) * c;
  float* out = dst + size_t(blockIdx.x) * c;
  float m = -FLT_MAX;
  for (int j = threadIdx.x; j < c; j += blockDim.x) m = fmaxf(m, toFloat(row[j]));
  shared[threadIdx.x] = m;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s /= 2) {
    if (threadIdx.x < s) shared[threadIdx.x] = fmaxf(shared[threadIdx.x], shared[threadIdx.x + s]);
    __syncthreads();
  }
  m = shared[0];
  __syncthreads();
  float sum = 0.f;
  for (int j = threadIdx.x; j < c; j += blockDim.x) sum += expf(toFloat(row[j]) - m);
  shared[threadIdx.x] = sum;
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s /= 2) {
    if (threadIdx.x < s) shared[threadIdx.x] += shared[threadIdx.x + s];
    __syncthreads();
  }
  sum = shared[0];
  for (int j = threadIdx.x; j < c; j += blockDim.x) out[j] = expf(toFloat(row[j]) - m) / sum;
}

}  // namespace

size_t sizeOf(DType t) { return t == DType::F32 ? 4 : 2; }

void inputToNhwc(const float* src, void* dst, DType t, int n, int c, int h, int w, int cPad, cudaStream_t s) {
  const size_t count = size_t(n) * h * w * cPad;
  dispatch(t, [&](auto tag) {
    using E = typename decltype(tag)::type;
    inputToNhwcKernel<<<blocks(count), kThreads, 0, s>>>(src, static_cast<E*>(dst), n, c, h, w, cPad);
  });
}

void nhwcToNchw(const void* src, DType t, float* dst, int n, int c, int h, int w, cudaStream_t s) {
  const size_t count = size_t(n) * c * h * w;
  dispatch(t, [&](auto tag) {
    using E = typename decltype(tag)::type;
    nhwcToNchwKernel<<<blocks(count), kThreads, 0, s>>>(static_cast<const E*>(src), dst, n, c, h, w);
  });
}

void packWeights(const float* oihw, void* dst, DType t, int o, int i, int k, int iPad, cudaStream_t s) {
  const size_t count = size_t(o) * k * k * iPad;
  dispatch(t, [&](auto tag) {
    using E = typename decltype(tag)::type;
    packWeightsKernel<<<blocks(count), kThreads, 0, s>>>(oihw, static_cast<E*>(dst), o, i, k, iPad);
  });
}

void convert(const float* src, void* dst, DType t, size_t count, cudaStream_t s) {
  dispatch(t, [&](auto tag) {
    using E = typename decltype(tag)::type;
    convertKernel<<<blocks(count), kThreads, 0, s>>>(src, static_cast<E*>(dst), count);
  });
}

void biasActivation(void* y, const void* bias, DType t, size_t pixels, int c, bool relu, cudaStream_t s) {
  const size_t count = pixels * c;
  dispatch(t, [&](auto tag) {
    using E = typename decltype(tag)::type;
    biasActivationKernel<<<blocks(count), kThreads, 0, s>>>(static_cast<E*>(y), static_cast<const E*>(bias), count, c, relu);
  });
}

void maxPool2x2(const void* src, void* dst, DType t, int n, int h, int w, int c, cudaStream_t s) {
  const size_t count = size_t(n) * (h / 2) * (w / 2) * c;
  dispatch(t, [&](auto tag) {
    using E = typename decltype(tag)::type;
    maxPoolKernel<<<blocks(count), kThreads, 0, s>>>(static_cast<const E*>(src), static_cast<E*>(dst), n, h, w, c);
  });
}

void lrnAcrossChannels(const void* src, void* dst, DType t, size_t pixels, int c, int size, float alpha, float beta,
                       float k, cudaStream_t s) {
  const size_t count = pixels * c;
  dispatch(t, [&](auto tag) {
    using E = typename decltype(tag)::type;
    lrnKernel<<<blocks(count), kThreads, 0, s>>>(static_cast<const E*>(src), static_cast<E*>(dst), pixels, c, size, alpha, beta, k);
  });
}

void adaptiveAvgPool7(const void* src, void* dst, DType t, int n, int h, int w, int c, cudaStream_t s) {
  const size_t count = size_t(n) * 49 * c;
  dispatch(t, [&](auto tag) {
    using E = typename decltype(tag)::type;
    adaptiveAvgPool7Kernel<<<blocks(count), kThreads, 0, s>>>(static_cast<const E*>(src), static_cast<E*>(dst), n, h, w, c);
  });
}

void meanOverSpace(const void* src, DType t, float* dst, int n, int hw, int c, cudaStream_t s) {
  const size_t count = size_t(n) * c;
  dispatch(t, [&](auto tag) {
    using E = typename decltype(tag)::type;
    meanOverSpaceKernel<<<blocks(count), kThreads, 0, s>>>(static_cast<const E*>(src), dst, n, hw, c);
  });
}

void softmaxRows(const void* src, DType t, float* dst, int n, int c, cudaStream_t s) {
  dispatch(t, [&](auto tag) {
    using E = typename decltype(tag)::type;
    softmaxKernel<<<n, kThreads, 0, s>>>(static_cast<const E*>(src), dst, c);
  });
}

}  // namespace vgg::cuda
