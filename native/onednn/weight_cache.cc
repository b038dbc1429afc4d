#include "weight_cache.h"

#include "../mapped_file.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

namespace vgg::onednn {

using dnnl::memory;

namespace {
// Large layers are read and converted this much at a time, their file pages released after each.
constexpr size_t kSliceBytes = 32 << 20;

std::string convertError(int layer) {
  return "layer " + std::to_string(layer) +
         ": this input shape needs a weight layout the packed file lacks, and its own cannot be converted; "
         "pack the file for this batch size and input size (vgg pack --batch, --size, --head)";
}

memory::desc descFromBytes(const std::string& bytes) {
  dnnl_memory_desc_t c;
  std::memcpy(&c, bytes.data(), sizeof c);  // TypeScript checked the length, version and ISA
  return memory::desc(c);
}

// 127 / the largest |w| of each output channel (dimension 0 of OIHW or OI). The file's pages
// are released as they are read, as convertInSlices does, so a large layer is never all resident.
std::vector<float> channelScales(const float* w, const memory::dims& dims) {
  const size_t outC = dims[0];
  size_t per = 1;
  for (size_t i = 1; i < dims.size(); i++) per *= dims[i];
  const size_t rowsPerSlice = std::max<size_t>(1, kSliceBytes / (per * sizeof(float)));
  std::vector<float> scales(outC);
  for (size_t o = 0; o < outC; o++) {
    float m = 0;
    for (size_t i = 0; i < per; i++) m = std::max(m, std::fabs(w[o * per + i]));
    scales[o] = m > 0 ? 127.f / m : 1.f;
    if ((o + 1) % rowsPerSlice == 0) releaseMappedPages(w + (o + 1 - rowsPerSlice) * per, rowsPerSlice * per * sizeof(float));
  }
  return scales;
}
}  // namespace

WeightCache::WeightCache(const dnnl::engine& engine, const std::vector<PackedWeight>& packed) : engine_(engine) {
  for (const PackedWeight& p : packed) {
    // oneDNN only reads weights during inference; the const_cast never leads to a write.
    const memory::desc md = descFromBytes(p.layout);
    prefaultPages(p.data, md.get_size());
    entries_.push_back({p.layer, md, memory(md, engine_, const_cast<void*>(p.data)), md.data.format_kind != dnnl_format_kind_wino});
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
  for (Entry& e : entries_) {
    if (e.layer != src.layer) continue;
    if (e.layout == want) {
      e.verified = true;
      return e.mem;
    }
    if (e.verified) from = &e;
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
    throw std::runtime_error(convertError(src.layer));
  }
  memory packed = allocate(want);
  if (!(src.plain && convertInSlices(src, source, packed, stream))) {
    try {
      dnnl::reorder(dnnl::reorder::primitive_desc(source, packed, attr)).execute(stream, source, packed);
    } catch (const dnnl::error&) {
      if (src.plain) throw;
      throw std::runtime_error(convertError(src.layer));
    }
    stream.wait();
    if (src.plain) releaseMappedPages(src.plain, source.get_desc().get_size());
  }
  entries_.push_back({src.layer, want, packed});
  return packed;
}

// A large layer (fc6 is 411 MB in fp32) is converted a slice of output channels at a time, and
// each slice's file pages are released as soon as it is done: the process never holds both
// whole copies, which would set its peak memory. False when oneDNN cannot slice this layout.
bool WeightCache::convertInSlices(const WeightSource& src, const memory& source, const memory& to, dnnl::stream& stream) {
  const size_t bytes = source.get_desc().get_size();
  if (bytes < 2 * kSliceBytes) return false;
  const memory::dim outC = src.dims[0];
  const memory::dim rowBytes = static_cast<memory::dim>(bytes) / outC;
  const memory::dim step = std::max<memory::dim>(64, kSliceBytes / rowBytes / 64 * 64);  // whole blocks of 64
  const bool quantize = to.get_desc().data_type() == memory::data_type::s8;
  try {
    // The padding of a blocked layout must hold zeros, which slices do not write.
    std::memset(to.get_data_handle(), 0, to.get_desc().get_size());
    std::vector<std::pair<dnnl::reorder, std::pair<memory, memory>>> slices;
    for (memory::dim o = 0; o < outC; o += step) {
      memory::dims dims = src.dims, offsets(src.dims.size(), 0);
      dims[0] = std::min(step, outC - o);
      offsets[0] = o;
      memory from(source.get_desc().submemory_desc(dims, offsets), engine_, source.get_data_handle());
      memory into(to.get_desc().submemory_desc(dims, offsets), engine_, to.get_data_handle());
      dnnl::primitive_attr attr;
      if (quantize) {
        const std::vector<float>& all = scales(src);
        attr.set_output_scales(1 << 0, std::vector<float>(all.begin() + o, all.begin() + o + dims[0]));
      }
      slices.push_back({dnnl::reorder(dnnl::reorder::primitive_desc(from, into, attr)), {from, into}});
    }
    // Every slice's primitive exists before any runs, so a refusal leaves nothing half done.
    memory::dim o = 0;
    for (auto& [reorder, mems] : slices) {
      reorder.execute(stream, mems.first, mems.second);
      stream.wait();
      releaseMappedPages(src.plain + o * (rowBytes / sizeof(float)), std::min(step, outC - o) * rowBytes);
      o += step;
    }
    return true;
  } catch (const dnnl::error&) {
    return false;
  }
}

memory WeightCache::allocate(const memory::desc& md) {
  owned_.push_back(allocateHuge(md.get_size()));
  return memory(md, engine_, owned_.back().get());
}

std::vector<memory::desc> WeightCache::layouts(int layer) const {
  std::vector<memory::desc> out;
  for (const Entry& e : entries_) if (e.layer == layer && e.verified) out.push_back(e.layout);
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
