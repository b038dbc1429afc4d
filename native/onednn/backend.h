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
  std::vector<PackedOut> pack(const std::vector<RunRequest>& shapes) override;

 private:
  const Plan& plan_;
  dnnl::engine engine_;
  dnnl::stream stream_;
  WeightCache weights_;
  ShapeCache<Net> nets_;

  Net& net(const RunRequest& r);
};

// oneDNN's version and the instruction set it dispatches to on this machine.
std::string versionString();
std::string isaName();

// What the bytes of a dnnl_memory_desc_t describe (vgg pack's layouts), or why they are not one.
struct LayoutInfo {
  std::vector<int64_t> dims;
  std::string dataType;
  std::string kind;  // "blocked" or "wino"
  size_t bytes = 0;
  std::string error;
};
LayoutInfo describeLayout(const uint8_t* bytes, size_t length);

}  // namespace vgg::onednn
