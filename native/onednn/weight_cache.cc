#include "weight_cache.h"

namespace vgg::onednn {

using dnnl::memory;

memory WeightCache::get(const float* src, const memory::dims& dims, memory::format_tag src_tag,
                        const memory::desc& want, dnnl::stream& stream) {
  for (const Entry& e : entries_) {
    if (e.src == src && e.layout == want) return e.mem;
  }
  // oneDNN only reads a reorder's source; the const_cast never leads to a write.
  memory user({dims, memory::data_type::f32, src_tag}, engine_, const_cast<float*>(src));
  memory packed(want, engine_);
  dnnl::reorder(user, packed).execute(stream, user, packed);
  stream.wait();
  entries_.push_back({src, want, packed});
  return packed;
}

}  // namespace vgg::onednn
