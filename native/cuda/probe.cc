#include "probe.h"

#include <cuda_runtime_api.h>
#include "loader.h"

namespace vgg::cuda {

Napi::Object probe(Napi::Env env, const std::vector<std::string>& dirs) {
  Napi::Object out = Napi::Object::New(env);
  try {
    const CudaLibs& libs = loadCudaLibs(dirs);
    out.Set("cudnn", libs.cudnnPath);
    out.Set("cudnnVersion", static_cast<double>(libs.dnn.cudnnGetVersion()));
    out.Set("cublasLt", libs.cublasLtPath);
    out.Set("cublasLtVersion", static_cast<double>(libs.lt.cublasLtGetVersion()));
  } catch (const std::exception& e) {
    out.Set("librariesError", e.what());
  }
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status == cudaSuccess) out.Set("devices", count);
  else out.Set("devicesError", std::string(cudaGetErrorName(status)) + ": " + cudaGetErrorString(status));
  cudaGetLastError();
  return out;
}

}  // namespace vgg::cuda
