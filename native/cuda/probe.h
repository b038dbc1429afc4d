#pragma once
#include <string>
#include <vector>
#include <napi.h>

namespace vgg::cuda {
// What this machine offers the CUDA backend: { cudnn, cudnnVersion, cublasLt, cublasLtVersion }
// or { librariesError }, and { devices } or { devicesError }. Quick enough for the JS thread.
Napi::Object probe(Napi::Env env, const std::vector<std::string>& libraryDirs);
}  // namespace vgg::cuda
