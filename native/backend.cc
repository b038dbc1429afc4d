#include "backend.h"

#include <stdexcept>
#ifdef VGG_WITH_ONEDNN
#include "onednn/backend.h"
#endif
#ifdef VGG_WITH_CUDA
#include "cuda/backend.h"
#endif

namespace vgg {

std::vector<PackedOut> Backend::pack(const std::vector<RunRequest>&) {
  throw std::runtime_error("packed weights are for the CPU backend only");
}

std::unique_ptr<Backend> makeBackend(const Plan& plan) {
  if (plan.cudaDevice < 0) {
#ifdef VGG_WITH_ONEDNN
    return std::make_unique<onednn::Backend>(plan);
#else
    throw std::runtime_error("this build of vggnet has no CPU backend (built with VGGNET_WITH_ONEDNN=OFF)");
#endif
  }
#ifdef VGG_WITH_CUDA
  return cuda::makeBackend(plan);
#else
  throw std::runtime_error("this build of vggnet has no CUDA backend (nvcc was not found when it was built)");
#endif
}

}  // namespace vgg
