// What the executor drives: oneDNN on the CPU, or cuDNN/cuBLASLt on a GPU.
#pragma once
#include <memory>
#include <vector>
#include "plan.h"

namespace vgg {

class Backend {
 public:
  virtual ~Backend() = default;
  // Runs one batch and fills its captures. `next`, when given, is the job queued after this
  // one: a backend may start moving its input while this one computes.
  virtual void run(const RunRequest& request, const RunRequest* next) = 0;
  // Compiles a network for each shape (no captures, no input needed) and copies out every
  // layer's weights in the layouts those networks use.
  virtual std::vector<PackedOut> pack(const std::vector<RunRequest>& shapes);
};

// Throws std::runtime_error saying why the plan's device cannot be used.
std::unique_ptr<Backend> makeBackend(const Plan& plan);

}  // namespace vgg
