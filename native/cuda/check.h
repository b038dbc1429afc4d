// Failures of the CUDA runtime, cuDNN and cuBLASLt as exceptions that say which call failed.
#pragma once
#include <stdexcept>
#include <string>
#include <cuda_runtime_api.h>

namespace vgg::cuda {

inline void check(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(status));
}

}  // namespace vgg::cuda

#define CUDA_CHECK(call) ::vgg::cuda::check((call), #call)
