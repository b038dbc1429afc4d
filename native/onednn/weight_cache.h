// Weights reordered once into the layout a primitive chose, shared by every input shape
// whose primitives chose the same layout. A packed file's weights enter already in their
// layout, mapped rather than copied; int8 weights are quantized per output channel here.
#pragma once
#include <memory>
#include <vector>
#include "../plan.h"
#include "huge_pages.h"
#include "oneapi/dnnl/dnnl.hpp"

namespace vgg::onednn {

// One layer's weights as the model file holds them: plain float32 (OIHW or OI, as PyTorch
// stores them), or nothing when a packed file supplied them.
struct WeightSource {
  int layer;                  // as PackedWeight::layer
  const float* plain;         // null for a packed file
  dnnl::memory::dims dims;
  dnnl::memory::format_tag tag;
};

class WeightCache {
 public:
  WeightCache(const dnnl::engine& engine, const std::vector<PackedWeight>& packed);

  // The layer's weights in the layout `want`; for s8 layouts also their per-output-channel scales.
  dnnl::memory get(const WeightSource& src, const dnnl::memory::desc& want, dnnl::stream& stream);
  // int8: 127 / the largest |w| of each output channel, from the plain weights or the packed file.
  const std::vector<float>& scales(const WeightSource& src);

  // The layouts this layer's weights are held in already.
  std::vector<dnnl::memory::desc> layouts(int layer) const;

  // Every layer's weights in each layout a compiled network uses, for vgg pack.
  std::vector<PackedOut> exportAll() const;

 private:
  struct Entry {
    int layer;
    dnnl::memory::desc layout;
    dnnl::memory mem;
    // A packed Winograd layout cannot be checked field by field: it is trusted (offered to
    // primitives, converted from) only once a primitive has asked for exactly it.
    bool verified = true;
  };
  dnnl::memory allocate(const dnnl::memory::desc& md);
  bool convertInSlices(const WeightSource& src, const dnnl::memory& source, const dnnl::memory& to, dnnl::stream& stream);

  dnnl::engine engine_;
  std::vector<Entry> entries_;
  std::vector<std::vector<float>> scales_;  // by layer, int8 only
  std::vector<HugeBuffer> owned_;  // converted weights' memory
};

}  // namespace vgg::onednn
