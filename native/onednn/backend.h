// The oneDNN CPU backend: one engine, stream and weight cache per executor, and a compiled
// Net per input shape, created on first use and kept.
#pragma once
#include <memory>
#include "../backend.h"
#include "../plan.h"
#include "../shape_cache.h"
#include "net.h"
#include "weight_cache.h"

namespace vgg::onednn {

class Backend : public vgg::Backend {
 public:
  explicit Backend(const Plan& plan);
  void run(const RunRequest& request, const RunRequest* next) override;

 private:
  const Plan& plan_;
  dnnl::engine engine_;
  dnnl::stream stream_;
  WeightCache weights_;
  ShapeCache<Net> nets_;
};

// oneDNN's version and the instruction set it dispatches to on this machine.
std::string versionString();
std::string isaName();

}  // namespace vgg::onednn
