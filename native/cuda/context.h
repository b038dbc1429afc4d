// What every compiled network of one model shares on its GPU: the libraries, their handles,
// the streams, the convolution workspace and the uploaded weights.
#pragma once
#include <memory>
#include <string>
#include <vector>
#include <cuda_runtime_api.h>
#include "../plan.h"
#include "kernels.h"
#include "loader.h"

namespace vgg::cuda {

// cudaMalloc'd memory, freed with its owner.
struct DeviceBuffer {
  void* ptr = nullptr;
  size_t bytes = 0;
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t n);
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr(o.ptr), bytes(o.bytes) { o.ptr = nullptr; o.bytes = 0; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  ~DeviceBuffer();
  template <typename T> T* as() const { return static_cast<T*>(ptr); }
};

// Weights in OHWI ("KRSC") layout in the model's precision, bias in the same precision.
struct DeviceLayer {
  DeviceBuffer weight, bias;
  int out = 0, in = 0, inPadded = 0, kernel = 0;
};

struct Context {
  Context(const Plan& plan);
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  void init(const Plan& plan);
  void release();
  void dnnCheck(int status, const char* what) const;
  void ltCheck(int status, const char* what) const;

  const CudaLibs& libs;
  DType dtype;
  cudnnHandle_t dnn = nullptr;
  cublasLtHandle_t lt = nullptr;
  cudaStream_t compute = nullptr, copy = nullptr;
  DeviceBuffer workspace;  // shared by every convolution and matmul: they run one at a time
  std::vector<DeviceLayer> convs;  // in network order
  DeviceLayer fc[3];               // fc6 as [out, 7, 7, C], fc7 and fc8 as [out, 1, 1, in]
  int inputChannels = 3;           // 8 with tensor cores: the first conv's input is padded
};

}  // namespace vgg::cuda
