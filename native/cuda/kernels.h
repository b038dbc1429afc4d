// The small CUDA kernels around cuDNN and cuBLASLt: layout and type changes at the edges of
// the network, the fallbacks cuDNN may decline, and the head's softmax and averages.
// Activations are NHWC in the model's precision; what leaves the GPU is NCHW float32.
#pragma once
#include <cstddef>
#include <cuda_runtime_api.h>

namespace vgg::cuda {

enum class DType { F32, BF16, F16 };
size_t sizeOf(DType t);

// NCHW float32 input -> NHWC, channels zero-padded to cPad (tensor cores want multiples of 8).
void inputToNhwc(const float* src, void* dst, DType t, int n, int c, int h, int w, int cPad, cudaStream_t s);
// An NHWC blob -> NCHW float32 (h = w = 1 turns an [n, c] matrix into float32).
void nhwcToNchw(const void* src, DType t, float* dst, int n, int c, int h, int w, cudaStream_t s);
// OIHW float32 weights -> OHWI ("KRSC") in precision t with input channels padded to iPad;
// fc6's [out, C*7*7] is OIHW with k = 7, fc7/fc8 are k = 1.
void packWeights(const float* oihw, void* dst, DType t, int o, int i, int k, int iPad, cudaStream_t s);
void convert(const float* src, void* dst, DType t, size_t count, cudaStream_t s);

// y = relu?(y + bias[c]) over an NHWC tensor: when cuDNN declines the fused form.
void biasActivation(void* y, const void* bias, DType t, size_t pixels, int c, bool relu, cudaStream_t s);
void maxPool2x2(const void* src, void* dst, DType t, int n, int h, int w, int c, cudaStream_t s);
void lrnAcrossChannels(const void* src, void* dst, DType t, size_t pixels, int c, int size, float alpha,
                       float beta, float k, cudaStream_t s);
// torchvision's AdaptiveAvgPool2d((7, 7)) on NHWC.
void adaptiveAvgPool7(const void* src, void* dst, DType t, int n, int h, int w, int c, cudaStream_t s);
// The dense head's score map [n, h, w, c] averaged over space -> float32 [n, c].
void meanOverSpace(const void* src, DType t, float* dst, int n, int hw, int c, cudaStream_t s);
// Row-wise softmax of [n, c] logits (of type t) -> float32.
void softmaxRows(const void* src, DType t, float* dst, int n, int c, cudaStream_t s);

}  // namespace vgg::cuda
