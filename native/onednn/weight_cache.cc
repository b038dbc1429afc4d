#include "weight_cache.h"

#include "../mapped_file.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

namespace vgg::onednn {

using dnnl::memory;

namespace {
memory::desc descFromBytes(const std::string& bytes) {
  dnnl_memory_desc_t c;
  std::memcpy(&c, bytes.data(), sizeof c);  // TypeScript checked the length, version and ISA
  return memory::desc(c);
}

// 127 / the largest |w| of each output channel (dimension 0 of OIHW or OI).
std::vector<float> channelScales(const float* w, const memory::dims& dims) {
  const size_t outC = dims[0];
  size_t per = 1;
  for (size_t i = 1; i < dims.size(); i++) per *= dims[i];
  std::vector<float> scales(outC);
  for (size_t o = 0; o < outC; o++) {
    float m = 0;
    for (size_t i = 0; i < per; i++) m = std::max(m, std::fabs(w[o * per + i]));
    scales[o] = m > 0 ? 127.f / m : 1.f;
  }
  return scales;
}
}  // namespace

WeightCache::WeightCache(const dnnl::engine& engine, const std::vector<PackedWeight>& packed) : engine_(engine) {
  for (const PackedWeight& p : packed) {
    // oneDNN only reads weights during inference; the const_cast never leads to a write.
    entries_.push_back({p.layer, descFromBytes(p.layout), memory(descFromBytes(p.layout), engine_, const_cast<void*>(p.data))});
    if (p.scales) {
      if (scales_.size() <= static_cast<size_t>(p.layer)) scales_.resize(p.layer + 1);
      const size_t outC = entries_.back().layout.dims()[0];
      scales_[p.layer].assign(p.scales, p.scales + outC);
    }
  }
}

const std::vector<float>& WeightCache::scales(const WeightSource& src) {
  if (scales_.size() <= static_cast<size_t>(src.layer)) scales_.resize(src.layer + 1);
  std::vector<float>& s = scales_[src.layer];
  if (s.empty()) {
    if (!src.plain) throw std::runtime_error("the packed file has no int8 scales for layer " + std::to_string(src.layer));
    s = channelScales(src.plain, src.dims);
  }
  return s;
}

memory WeightCache::get(const WeightSource& src, const memory::desc& want, dnnl::stream& stream) {
  const Entry* from = nullptr;
  for (const Entry& e : entries_) {
    if (e.layer != src.layer) continue;
    if (e.layout == want) return e.mem;
    from = &e;
  }
  const bool quantize = want.data_type() == memory::data_type::s8;
  memory source;
  dnnl::primitive_attr attr;
  if (src.plain) {
    // oneDNN only reads a reorder's source; the const_cast never leads to a write.
    source = memory({src.dims, memory::data_type::f32, src.tag}, engine_, const_cast<float*>(src.plain));
    if (quantize) attr.set_output_scales(1 << 0, scales(src));
  } else if (from) {
    // A packed layout this shape's primitive did not choose: convert it. The dense head reads
    // fc7 and fc8 as 1x1 convolutions, whose weights are the fc ones with two dims of 1 added.
    source = from->mem;
    if (from->layout.dims().size() != src.dims.size()) {
      try {
        source = memory(from->layout.reshape(src.dims), engine_, from->mem.get_data_handle());
      } catch (const dnnl::error&) {
        // not reshapable: the reorder below reports it
      }
    }
  } else {
    throw std::runtime_error("the packed file has no weights for layer " + std::to_string(src.layer));
  }
  memory packed = allocate(want);
  try {
    dnnl::reorder(dnnl::reorder::primitive_desc(source, packed, attr)).execute(stream, source, packed);
  } catch (const dnnl::error&) {
    if (src.plain) throw;
    throw std::runtime_error("layer " + std::to_string(src.layer) +
                             ": this input shape needs a weight layout the packed file lacks and oneDNN cannot convert "
                             "its layout; pack the file for this batch size and input size (vgg pack --batch, --size)");
  }
  stream.wait();
  if (src.plain) releaseMappedPages(src.plain, source.get_desc().get_size());
  entries_.push_back({src.layer, want, packed});
  return packed;
}

memory WeightCache::allocate(const memory::desc& md) {
  owned_.push_back(allocateHuge(md.get_size()));
  return memory(md, engine_, owned_.back().get());
}

std::vector<memory::desc> WeightCache::layouts(int layer) const {
  std::vector<memory::desc> out;
  for (const Entry& e : entries_) if (e.layer == layer) out.push_back(e.layout);
  return out;
}

std::vector<PackedOut> WeightCache::exportAll() const {
  std::vector<PackedOut> out;
  for (const Entry& e : entries_) {
    const size_t bytes = e.layout.get_size();
    auto data = std::make_shared<std::vector<char>>(bytes);
    std::memcpy(data->data(), e.mem.get_data_handle(), bytes);
    const dnnl_memory_desc_t& c = e.layout.data;
    std::string layout(reinterpret_cast<const char*>(&c), sizeof c);
    std::vector<float> scales;
    if (e.layout.data_type() == memory::data_type::s8) scales = scales_.at(e.layer);
    out.push_back({e.layer, std::move(layout), std::move(data), std::move(scales)});
  }
  return out;
}

}  // namespace vgg::onednn
