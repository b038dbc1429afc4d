// The oneDNN CPU backend: one engine, stream and weight cache per executor, and a compiled
// Net per input shape, created on first use and kept.
#pragma once
#include <map>
#include <memory>
#include <tuple>
#include "../backend.h"
#include "../plan.h"
#include "net.h"
#include "weight_cache.h"

namespace vgg::onednn {

class Backend : public vgg::Backend {
 public:
  explicit Backend(const Plan& plan);
  void run(const RunRequest& request, const RunRequest* next) override;

 private:
  int threads_;
  const Plan& plan_;
  dnnl::engine engine_;
  dnnl::stream stream_;
  WeightCache weights_;
  std::map<std::tuple<int, int, int, Head>, std::unique_ptr<Net>> nets_;
};

// oneDNN's version and the instruction set it dispatches to on this machine.
std::string versionString();
std::string isaName();

}  // namespace vgg::onednn
