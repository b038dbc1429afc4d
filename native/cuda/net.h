// One VGG compiled for one input shape and head on the GPU: cuDNN convolutions and pooling,
// cuBLASLt fc layers, a few kernels, recorded once as a CUDA graph. Every blob keeps its own
// buffer (GPU memory is plentiful next to VGG's activations), so any of them can be read
// after the graph has run.
#pragma once
#include <functional>
#include <vector>
#include "context.h"

namespace vgg::cuda {

struct Blob {
  const void* data;
  DType dtype;
  int n, c, h, w;  // NHWC in memory; h = w = 1 for [n, c]
};

class Net {
 public:
  Net(Context& ctx, const Plan& plan, int n, int h, int w, Head head);
  ~Net();
  Net(const Net&) = delete;
  Net& operator=(const Net&) = delete;

  float* input() const { return input_.as<float>(); }  // NCHW float32, filled by the caller
  size_t inputBytes() const { return input_.bytes; }
  void launch();  // on ctx.compute, after the input is there
  const Blob& blob(int index) const { return blobs_[index]; }

 private:
  using Step = std::function<void(cudaStream_t)>;

  void build(const Plan& plan, int n, int h, int w, Head head);
  // Builders, called in network order; each appends its steps and its blob.
  void toNhwc(int n, int h, int w);
  void conv(const DeviceLayer& layer, int pad, bool relu);
  void maxPool();
  void lrn(const FeatureOp& op);
  void adaptiveAvgPool7();
  void fullyConnected(const DeviceLayer& layer, bool relu);
  void meanOverSpace();
  void softmax();

  Blob alloc(DType t, int n, int c, int h, int w);
  void captureGraph();

  Context& ctx_;
  DeviceBuffer input_;
  int shape_[3];  // n, h, w of the input
  std::vector<DeviceBuffer> buffers_;
  std::vector<Blob> blobs_;      // in blob-index order (plan.h's numbering)
  Blob cur_{};                   // the activation the next builder reads
  std::vector<Step> steps_;
  std::vector<std::function<void()>> cleanup_;  // descriptors to destroy
  cudaGraphExec_t graph_ = nullptr;
};

}  // namespace vgg::cuda
