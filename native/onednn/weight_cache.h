// Weights reordered once into the layout a primitive chose, shared by every input shape
// whose primitives chose the same layout.
#pragma once
#include <vector>
#include "oneapi/dnnl/dnnl.hpp"

namespace vgg::onednn {

class WeightCache {
 public:
  explicit WeightCache(const dnnl::engine& engine) : engine_(engine) {}

  // `src` holds `dims` in the plain layout `src_tag` (OIHW or OI, as PyTorch stores them).
  dnnl::memory get(const float* src, const dnnl::memory::dims& dims, dnnl::memory::format_tag src_tag,
                   const dnnl::memory::desc& want, dnnl::stream& stream);

 private:
  struct Entry {
    const float* src;
    dnnl::memory::desc layout;
    dnnl::memory mem;
  };
  dnnl::engine engine_;
  std::vector<Entry> entries_;
};

}  // namespace vgg::onednn
