// A stack of 1 to 3 fully connected layers trained with mini-batch SGD on oneDNN: inner
// product forward-training (ReLU fused as a post-op on hidden layers), inverted dropout after
// each hidden ReLU (and optionally on the input), softmax cross-entropy averaged over the
// batch, inner product backward-data/backward-weights with ReLU backward, and
// torch.optim.SGD's update (momentum, weight decay on every parameter, no dampening).
// Everything is float32; activations are plain row-major, weights (with their gradients and
// momentum) stay in the blocked layout oneDNN prefers, so no step reorders them; one compiled
// pass per batch size.
#pragma once
#include <cstdint>
#include <vector>
#include "oneapi/dnnl/dnnl.hpp"
#include "../shape_cache.h"

namespace vgg::train {

struct FcLayerData {
  int inputs, outputs;
  const float* weight;  // [outputs, inputs], as torchvision's Linear holds it
  const float* bias;
};

struct TrainSettings {
  float momentum, weightDecay, dropout;
  bool inputDropout;
  uint64_t seed;
  int threads;
};

struct StepOut {
  double loss;  // mean cross-entropy of the batch
  int correct;  // rows whose largest logit is their label
};

class FcStack {
 public:
  // Copies the layers' weights; call on the thread that will train (OpenMP threads are per thread).
  FcStack(const std::vector<FcLayerData>& layers, const TrainSettings& settings);
  ~FcStack();

  StepOut step(const float* features, const int32_t* labels, int n, float learningRate);
  void predict(const float* features, int n, float* logits);
  void copyWeights(size_t layer, float* weight, float* bias);  // as [outputs, inputs] and [outputs]
  // The multipliers (0 or 1/(1-p)) the last step's dropout used: the input's first if
  // inputDropout, then each hidden layer's; empty before the first step or without dropout.
  const std::vector<std::vector<float>>& lastMasks() const { return masks_; }
  size_t layers() const { return params_.size(); }

 private:
  struct Param {  // one weight or bias tensor with its gradient and momentum buffer
    dnnl::memory value, grad;
    std::vector<float> momentum;
  };
  struct Layer {
    int inputs, outputs;
    Param weight, bias;
  };
  struct Pass;  // the primitives and activations for one batch size

  // The batch size whose preferred weights layout every batch size uses.
  static constexpr int kLayoutBatch = 64;

  Param param(const dnnl::memory::desc& md, const float* from, dnnl::memory::dims dims);
  Pass& pass(int n);
  void forward(Pass& p, const float* features, bool training);
  void dropout(float* data, size_t count, int site);
  void update(Param& param, float learningRate);

  TrainSettings settings_;
  dnnl::engine engine_;
  dnnl::stream stream_;
  std::vector<Layer> params_;
  ShapeCache<Pass> passes_;
  uint64_t steps_ = 0;
  std::vector<std::vector<float>> masks_;
};

}  // namespace vgg::train
