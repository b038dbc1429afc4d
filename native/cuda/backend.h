// The CUDA backend: cuDNN convolutions, pooling and LRN, cuBLASLt fc layers, CUDA graphs.
#pragma once
#include <memory>
#include <string>
#include "../backend.h"

namespace vgg::cuda {

std::unique_ptr<vgg::Backend> makeBackend(const Plan& plan);
// The CUDA runtime this build links, e.g. "13.0".
std::string runtimeVersionString();

}  // namespace vgg::cuda
