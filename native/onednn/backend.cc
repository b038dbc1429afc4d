#include "backend.h"

#include <omp.h>
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
      weights_(engine_) {
  omp_set_num_threads(plan.threads);  // OpenMP settings are per thread: this is the executor's
}

void Backend::run(const RunRequest& r, const RunRequest* /* next: nothing to prefetch on a CPU */) {
  rethrowing([&] {
    Net& net = nets_.get(r, [&] { return std::make_unique<Net>(plan_, weights_, engine_, stream_, r.n, r.h, r.w, r.head); });
    net.run(r, stream_);
  });
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
