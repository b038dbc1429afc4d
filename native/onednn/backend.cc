#include "backend.h"

#include <omp.h>
#include <algorithm>
#include <cstring>
#include <numeric>
#include <stdexcept>
#include <string>

namespace vgg::onednn {

namespace {
// oneDNN's exceptions carry a status the message alone does not show.
template <typename F>
auto rethrowing(F&& f) {
  try {
    return f();
  } catch (const dnnl::error& e) {
    throw std::runtime_error(std::string("oneDNN: ") + e.what() + " (status " + std::to_string(e.status) + ")");
  }
}
}  // namespace

Backend::Backend(const Plan& plan)
    : plan_(plan),
      engine_(rethrowing([] { return dnnl::engine(dnnl::engine::kind::cpu, 0); })),
      stream_(engine_),
      weights_(engine_, plan.packed) {
  omp_set_num_threads(plan.threads);  // OpenMP settings are per thread: this is the executor's
}

Net& Backend::net(const RunRequest& r) {
  return nets_.get(r, [&] { return std::make_unique<Net>(plan_, weights_, engine_, stream_, r.n, r.h, r.w, r.head); });
}

void Backend::run(const RunRequest& r, const RunRequest* /* next: nothing to prefetch on a CPU */) {
  rethrowing([&] { net(r).run(r, stream_); });
}

std::vector<PackedOut> Backend::pack(const std::vector<RunRequest>& shapes) {
  return rethrowing([&] {
    for (const RunRequest& r : shapes) net(r);
    return weights_.exportAll();
  });
}

// The bytes come from a file: everything oneDNN would index with is checked before oneDNN sees
// them. A blocked layout must be what oneDNN itself makes: no offsets, sane inner blocks, and
// strides that nest the outer blocks densely (no overlap, nothing outside the size). A Winograd
// layout cannot be checked field by field; the backend uses one only when it equals the layout
// a primitive asks for (WeightCache).
LayoutInfo describeLayout(const uint8_t* bytes, size_t length) {
  LayoutInfo info;
  dnnl_memory_desc_t c;
  auto fail = [&info](const std::string& why) {
    info.error = why;
    return info;
  };
  if (length != sizeof c) return fail("a layout is " + std::to_string(length) + " bytes; this oneDNN's are " + std::to_string(sizeof c));
  std::memcpy(&c, bytes, sizeof c);
  if (c.ndims < 1 || c.ndims > 4) return fail("not a weights layout (" + std::to_string(c.ndims) + " dimensions)");
  switch (c.data_type) {
    case dnnl_f32: info.dataType = "f32"; break;
    case dnnl_bf16: info.dataType = "bf16"; break;
    case dnnl_s8: info.dataType = "s8"; break;
    default: return fail("data type " + std::to_string(c.data_type) + " is not a weights type");
  }
  for (int i = 0; i < c.ndims; i++) {
    if (c.dims[i] < 1 || c.dims[i] > (1 << 20)) return fail("dimension " + std::to_string(i) + " is out of range");
    info.dims.push_back(c.dims[i]);
  }
  if (c.format_kind == dnnl_format_kind_wino) {
    info.kind = "wino";
    info.bytes = c.format_desc.wino_desc.size;
    return info;
  }
  if (c.format_kind != dnnl_blocked) return fail("not a blocked or Winograd layout");
  info.kind = "blocked";
  if (c.offset0 != 0) return fail("a layout with an offset");
  const dnnl_blocking_desc_t& b = c.format_desc.blocking;
  if (b.inner_nblks < 0 || b.inner_nblks > 6) return fail("too many inner blocks");
  int64_t block[4] = {1, 1, 1, 1}, inner = 1;
  for (int k = 0; k < b.inner_nblks; k++) {
    if (b.inner_blks[k] < 1 || b.inner_blks[k] > 1024 || b.inner_idxs[k] < 0 || b.inner_idxs[k] >= c.ndims) return fail("an inner block out of range");
    block[b.inner_idxs[k]] *= b.inner_blks[k];
    inner *= b.inner_blks[k];
    if (inner > (1 << 20)) return fail("an inner block out of range");
  }
  int64_t outer[4];
  for (int i = 0; i < c.ndims; i++) {
    const int64_t want = (c.dims[i] + block[i] - 1) / block[i] * block[i];
    if (c.padded_offsets[i] != 0 || c.padded_dims[i] != want) return fail("padding that does not match the blocks");
    outer[i] = want / block[i];
  }
  // The dimensions with more than one outer block, from the smallest stride up, must each step
  // over exactly the ones before: a dense layout with nothing shared and nothing past its end.
  std::vector<int> order(c.ndims);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int x, int y) { return b.strides[x] < b.strides[y]; });
  int64_t span = inner;
  for (int k = 0; k < c.ndims; k++) {
    const int i = order[k];
    if (outer[i] == 1) continue;
    if (b.strides[i] != span) return fail("strides that are not a dense layout");
    span *= outer[i];
  }
  for (int i = 0; i < c.ndims; i++) {
    if (outer[i] == 1 && (b.strides[i] < 0 || b.strides[i] > span)) return fail("strides that are not a dense layout");
  }
  const uint64_t known = dnnl_memory_extra_flag_compensation_conv_s8s8 | dnnl_memory_extra_flag_scale_adjust |
                         dnnl_memory_extra_flag_compensation_conv_asymmetric_src;
  if ((c.extra.flags & ~known) != 0) return fail("unknown extra flags");
  if ((c.extra.flags & dnnl_memory_extra_flag_scale_adjust) && !(c.extra.scale_adjust > 0 && c.extra.scale_adjust <= 1)) {
    return fail("a scale adjustment out of range");
  }
  const bool s8s8 = c.extra.flags & dnnl_memory_extra_flag_compensation_conv_s8s8;
  const bool asymmetric = c.extra.flags & dnnl_memory_extra_flag_compensation_conv_asymmetric_src;
  if ((s8s8 || asymmetric) && c.data_type != dnnl_s8) return fail("a compensation on weights that are not s8");
  if ((s8s8 && c.extra.compensation_mask != 1) || (asymmetric && c.extra.asymm_compensation_mask != 1)) {
    return fail("a compensation that is not per output channel");
  }
  info.bytes = dnnl_memory_desc_get_size(&c);
  return info;
}

std::string versionString() {
  const dnnl_version_t* v = dnnl_version();
  return std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch);
}

std::string isaName() {
  switch (dnnl::get_effective_cpu_isa()) {
    case dnnl::cpu_isa::sse41: return "sse41";
    case dnnl::cpu_isa::avx: return "avx";
    case dnnl::cpu_isa::avx2: return "avx2";
    case dnnl::cpu_isa::avx512_mic: return "avx512_mic";
    case dnnl::cpu_isa::avx512_mic_4ops: return "avx512_mic_4ops";
    case dnnl::cpu_isa::avx512_core: return "avx512_core";
    case dnnl::cpu_isa::avx512_core_vnni: return "avx512_core_vnni";
    case dnnl::cpu_isa::avx512_core_bf16: return "avx512_core_bf16";
    case dnnl::cpu_isa::avx512_core_amx: return "avx512_core_amx";
    case dnnl::cpu_isa::avx2_vnni: return "avx2_vnni";
    default: return "unknown";
  }
}

}  // namespace vgg::onednn
