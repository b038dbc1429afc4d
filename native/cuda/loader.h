// Loads libcudnn.so.9 and libcublasLt.so.13 at run time, the way onnxruntime loads its CUDA
// provider, so one build of the addon runs with or without them and says what is missing.
#pragma once
#include <string>
#include <vector>
#include "blaslt_api.h"
#include "dnn_api.h"

namespace vgg::cuda {

struct CudaLibs {
  DnnApi dnn;
  BlasLtApi lt;
  std::string cudnnPath, cublasLtPath;  // the files loaded
  // cuDNN sub-libraries found beside libcudnn.so.9 that would not load, with dlerror's
  // reason (optional engines only, e.g. the runtime-compiled one without NVRTC). Empty mostly.
  std::vector<std::string> skipped;
};

// Finds, loads and resolves both libraries, once per process; thread-safe. Each library is
// looked for in each of searchDirs, in order (the caller puts VGGNET_CUDNN_PATH and the Python
// packages' nvidia/cudnn/lib and nvidia/cu13/lib there; empty entries are skipped), then by
// its soname on the loader path (LD_LIBRARY_PATH, ld.so.cache, the system folders). A copy
// already loaded into the process (by another library) is used as it is.
// Throws std::runtime_error naming every place tried and the fix. Once loaded, later calls
// return the same libraries whatever searchDirs hold; after a failure, the next call tries again.
const CudaLibs& loadCudaLibs(const std::vector<std::string>& searchDirs);

}  // namespace vgg::cuda
