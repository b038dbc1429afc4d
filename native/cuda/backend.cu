#include "backend.h"

#include <algorithm>
#include <cstring>
#include <thread>
#include <vector>
#include "check.h"
#include "context.h"
#include "net.h"
#include "../shape_cache.h"

namespace vgg::cuda {

// ---- device memory -----------------------------------------------------------

DeviceBuffer::DeviceBuffer(size_t n) : bytes(n) { CUDA_CHECK(cudaMalloc(&ptr, n ? n : 1)); }
DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  std::swap(ptr, o.ptr);
  std::swap(bytes, o.bytes);
  return *this;
}
DeviceBuffer::~DeviceBuffer() { if (ptr) cudaFree(ptr); }

// cudaHostAlloc'd memory: what makes host<->device copies asynchronous.
struct PinnedBuffer {
  void* ptr = nullptr;
  size_t bytes = 0;
  void reserve(size_t n) {
    if (n <= bytes) return;
    if (ptr) cudaFreeHost(ptr);
    ptr = nullptr;
    CUDA_CHECK(cudaHostAlloc(&ptr, n, cudaHostAllocDefault));
    bytes = n;
  }
  ~PinnedBuffer() { if (ptr) cudaFreeHost(ptr); }
};

// ---- context -----------------------------------------------------------------

namespace {

constexpr size_t kWorkspaceBytes = size_t(512) << 20;

void selectDevice(int index) {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status == cudaErrorNoDevice || (status == cudaSuccess && count == 0)) throw std::runtime_error("no CUDA GPU found");
  if (status != cudaSuccess) {
    throw std::runtime_error("the CUDA driver is missing or too old for CUDA " + runtimeVersionString() + " (" +
                             cudaGetErrorString(status) + ")");
  }
  if (index >= count) throw std::runtime_error("cuda:" + std::to_string(index) + " does not exist: this machine has " + std::to_string(count) + " GPU(s)");
  CUDA_CHECK(cudaSetDevice(index));
}

// One thread copies about 10 GB/s: a batch of 256 images (154 MB of float32) would take longer
// to reach pinned memory than the GPU takes to run it, so large copies are split across threads.
void parallelCopy(void* dst, const void* src, size_t bytes) {
  constexpr size_t kMinChunk = size_t(4) << 20;
  const size_t threads = std::min<size_t>({8, std::max(1u, std::thread::hardware_concurrency() / 2), bytes / kMinChunk + 1});
  const size_t per = (bytes + threads - 1) / threads;
  std::vector<std::thread> helpers;
  for (size_t t = 1; t < threads && t * per < bytes; t++) {
    helpers.emplace_back([=] { std::memcpy(static_cast<char*>(dst) + t * per, static_cast<const char*>(src) + t * per, std::min(per, bytes - t * per)); });
  }
  std::memcpy(dst, src, std::min(per, bytes));
  for (std::thread& h : helpers) h.join();
}

DType dtypeOf(Precision p) { return p == Precision::F32 ? DType::F32 : p == Precision::BF16 ? DType::BF16 : DType::F16; }

// Uploads OIHW float32 weights once and packs them on the GPU into OHWI in the model's precision.
DeviceLayer upload(const float* weight, const float* bias, int out, int in, int inPadded, int kernel, DType t, cudaStream_t s) {
  DeviceLayer l;
  l.out = out; l.in = in; l.inPadded = inPadded; l.kernel = kernel;
  const size_t count = size_t(out) * in * kernel * kernel;
  DeviceBuffer staging(count * sizeof(float));
  CUDA_CHECK(cudaMemcpyAsync(staging.ptr, weight, staging.bytes, cudaMemcpyHostToDevice, s));
  l.weight = DeviceBuffer(size_t(out) * inPadded * kernel * kernel * sizeOf(t));
  packWeights(staging.as<float>(), l.weight.ptr, t, out, in, kernel, inPadded, s);
  DeviceBuffer biasStaging(out * sizeof(float));
  CUDA_CHECK(cudaMemcpyAsync(biasStaging.ptr, bias, biasStaging.bytes, cudaMemcpyHostToDevice, s));
  l.bias = DeviceBuffer(out * sizeOf(t));
  convert(biasStaging.as<float>(), l.bias.ptr, t, out, s);
  CUDA_CHECK(cudaStreamSynchronize(s));  // before the staging buffers go
  return l;
}

// The libraries first: without them a GPU is of no use, and their absence is the likelier fix.
const CudaLibs& openDevice(const Plan& plan) {
  const CudaLibs& libs = loadCudaLibs(plan.libraryDirs);
  selectDevice(plan.cudaDevice);
  return libs;
}

}  // namespace

Context::Context(const Plan& plan) : libs(openDevice(plan)), dtype(dtypeOf(plan.precision)) {
  try {
    init(plan);
  } catch (...) {
    release();  // the destructor does not run for a half-built object
    throw;
  }
}

void Context::init(const Plan& plan) {
  dnnCheck(libs.dnn.cudnnCreate(&dnn), "cudnnCreate");
  ltCheck(libs.lt.cublasLtCreate(&lt), "cublasLtCreate");
  CUDA_CHECK(cudaStreamCreateWithFlags(&compute, cudaStreamNonBlocking));
  CUDA_CHECK(cudaStreamCreateWithFlags(&copy, cudaStreamNonBlocking));
  dnnCheck(libs.dnn.cudnnSetStream(dnn, compute), "cudnnSetStream");
  workspace = DeviceBuffer(kWorkspaceBytes);

  // Tensor cores want channel counts in multiples of 8: pad the image's 3 channels.
  inputChannels = dtype == DType::F32 ? 3 : 8;
  int c = inputChannels;
  for (const FeatureOp& op : plan.features) {
    if (op.kind != OpKind::Conv) continue;
    convs.push_back(upload(op.weight, op.bias, op.outC, op.inC, c, op.kernel, dtype, compute));
    c = op.outC;
  }
  // fc6 is OIHW [hidden, C, 7, 7]: packed to OHWI it serves the fixed head (pool5 flattened
  // in HWC order) and the dense head's 7x7 conv alike.
  fc[0] = upload(plan.fc[0].weight, plan.fc[0].bias, plan.fc[0].outF, plan.lastC, plan.lastC, kFc6Window, dtype, compute);
  for (int i = 1; i < 3; i++) fc[i] = upload(plan.fc[i].weight, plan.fc[i].bias, plan.fc[i].outF, plan.fc[i].inF, plan.fc[i].inF, 1, dtype, compute);
}

Context::~Context() { release(); }

void Context::release() {
  if (dnn) libs.dnn.cudnnDestroy(dnn);
  if (lt) libs.lt.cublasLtDestroy(lt);
  if (compute) cudaStreamDestroy(compute);
  if (copy) cudaStreamDestroy(copy);
  dnn = nullptr;
  lt = nullptr;
  compute = copy = nullptr;
}

void Context::dnnCheck(int status, const char* what) const {
  if (status != 0) throw std::runtime_error(std::string("cuDNN: ") + what + ": " + libs.dnn.cudnnGetErrorString(static_cast<cudnnStatus_t>(status)));
}

void Context::ltCheck(int status, const char* what) const {
  if (status != 0) throw std::runtime_error(std::string("cuBLASLt: ") + what + " failed with status " + std::to_string(status));
}

// ---- backend -----------------------------------------------------------------

namespace {

class CudaBackend : public vgg::Backend {
 public:
  explicit CudaBackend(const Plan& plan) : plan_(plan), ctx_(plan) {
    for (Slot& s : slots_) CUDA_CHECK(cudaEventCreateWithFlags(&s.ready, cudaEventDisableTiming));
  }
  ~CudaBackend() override {
    // This model's streams only: other models may be running on the same GPU.
    cudaStreamSynchronize(ctx_.compute);
    cudaStreamSynchronize(ctx_.copy);
    nets_.clear();
    for (Slot& s : slots_) cudaEventDestroy(s.ready);
  }

  void run(const RunRequest& r, const RunRequest* next) override {
    Slot& slot = slots_[active_];
    // A prefetch is good for this run only: forget it now, whatever happens below.
    const bool prefetched = slot.src == r.input;
    slot.src = nullptr;
    Net& net = nets_.get(r, [&] { return std::make_unique<Net>(ctx_, plan_, r.n, r.h, r.w, r.head); });
    if (!prefetched || slot.bytes != net.inputBytes()) upload(slot, r.input, net.inputBytes());
    // The input is on the GPU (or on its way, on the copy stream): compute waits for it only.
    CUDA_CHECK(cudaStreamWaitEvent(ctx_.compute, slot.ready, 0));
    CUDA_CHECK(cudaMemcpyAsync(net.input(), slot.device.ptr, net.inputBytes(), cudaMemcpyDeviceToDevice, ctx_.compute));
    net.launch();

    // While the GPU computes, bring the next batch over through the other slot.
    active_ ^= 1;
    if (next && next->n == r.n && next->h == r.h && next->w == r.w) {
      upload(slots_[active_], next->input, net.inputBytes());
      slots_[active_].src = next->input;  // only a prefetch is remembered: the caller may reuse an array later
    }

    size_t total = 0;
    for (const Capture& c : r.captures) total += elements(net.blob(c.blob));
    if (outDevice_.bytes < total * sizeof(float)) outDevice_ = DeviceBuffer(total * sizeof(float));
    outHost_.reserve(total * sizeof(float));
    size_t at = 0;
    for (const Capture& c : r.captures) {
      const Blob& b = net.blob(c.blob);
      nhwcToNchw(b.data, b.dtype, outDevice_.as<float>() + at, b.n, b.c, b.h, b.w, ctx_.compute);
      at += elements(b);
    }
    CUDA_CHECK(cudaMemcpyAsync(outHost_.ptr, outDevice_.ptr, total * sizeof(float), cudaMemcpyDeviceToHost, ctx_.compute));
    CUDA_CHECK(cudaStreamSynchronize(ctx_.compute));
    at = 0;
    for (const Capture& c : r.captures) {
      const size_t count = elements(net.blob(c.blob));
      parallelCopy(c.out, static_cast<float*>(outHost_.ptr) + at, count * sizeof(float));
      at += count;
    }
  }

 private:
  // A pinned staging buffer and a device copy of one batch's input.
  struct Slot {
    PinnedBuffer host;
    DeviceBuffer device;
    const float* src = nullptr;  // the queued job whose input was prefetched into `device`
    size_t bytes = 0;
    cudaEvent_t ready = nullptr;
  };

  static size_t elements(const Blob& b) { return size_t(b.n) * b.c * b.h * b.w; }

  void upload(Slot& slot, const float* src, size_t bytes) {
    CUDA_CHECK(cudaEventSynchronize(slot.ready));  // a prefetch that was never consumed may still be copying
    slot.host.reserve(bytes);
    if (slot.device.bytes < bytes) slot.device = DeviceBuffer(bytes);
    parallelCopy(slot.host.ptr, src, bytes);
    CUDA_CHECK(cudaMemcpyAsync(slot.device.ptr, slot.host.ptr, bytes, cudaMemcpyHostToDevice, ctx_.copy));
    CUDA_CHECK(cudaEventRecord(slot.ready, ctx_.copy));
    slot.bytes = bytes;
  }


  const Plan& plan_;
  Context ctx_;
  ShapeCache<Net> nets_;
  Slot slots_[2];
  int active_ = 0;
  DeviceBuffer outDevice_;
  PinnedBuffer outHost_;
};

}  // namespace

std::unique_ptr<vgg::Backend> makeBackend(const Plan& plan) { return std::make_unique<CudaBackend>(plan); }

std::string runtimeVersionString() { return std::to_string(CUDART_VERSION / 1000) + "." + std::to_string(CUDART_VERSION % 1000 / 10); }

}  // namespace vgg::cuda
