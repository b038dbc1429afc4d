#include "backend.h"

#include <omp.h>
#include <cstring>
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

LayoutInfo describeLayout(const uint8_t* bytes, size_t length) {
  LayoutInfo info;
  dnnl_memory_desc_t c;
  if (length != sizeof c) {
    info.error = "a layout is " + std::to_string(length) + " bytes; this oneDNN's are " + std::to_string(sizeof c);
    return info;
  }
  std::memcpy(&c, bytes, sizeof c);
  const bool known_kind = c.format_kind == dnnl_blocked || c.format_kind == dnnl_format_kind_wino;
  if (c.ndims < 1 || c.ndims > 4 || !known_kind) {
    info.error = "not a weights layout";
    return info;
  }
  for (int i = 0; i < c.ndims; i++) {
    if (c.dims[i] < 1 || c.padded_dims[i] < c.dims[i] || c.padded_dims[i] > c.dims[i] + 64) {
      info.error = "dimension " + std::to_string(i) + " is out of range";
      return info;
    }
    info.dims.push_back(c.dims[i]);
  }
  switch (c.data_type) {
    case dnnl_f32: info.dataType = "f32"; break;
    case dnnl_bf16: info.dataType = "bf16"; break;
    case dnnl_s8: info.dataType = "s8"; break;
    default: info.error = "data type " + std::to_string(c.data_type) + " is not a weights type"; return info;
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
