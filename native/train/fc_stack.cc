#include "fc_stack.h"

#include <omp.h>
#include <algorithm>
#include <cmath>
#include <cstring>

namespace vgg::train {

using dnnl::memory;
using tag = memory::format_tag;

namespace {

memory::desc plain(memory::dims dims) {
  return memory::desc(dims, memory::data_type::f32, dims.size() == 1 ? tag::a : tag::ab);
}

float* data(const memory& m) { return static_cast<float*>(m.get_data_handle()); }

// A counter-based generator: a mask element depends on (seed, step, site, index) only, so the
// masks are the same whatever the thread count and however OpenMP splits the loop.
uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace

// One compiled forward and backward pass for a batch of n rows. Each level's `out` holds its
// output (ReLU'd and dropped out on hidden levels, the logits on the last); `grad` holds the
// loss's gradient with respect to that output, then (hidden levels) to the pre-activation.
struct FcStack::Pass {
  struct Level {
    dnnl::inner_product_forward forward;
    dnnl::inner_product_backward_weights backwardWeights;
    dnnl::inner_product_backward_data backwardData;  // all but the first level
    dnnl::eltwise_backward reluBackward;             // hidden levels
    memory out, grad;
  };
  int n;
  memory input;                 // the caller's features, or `dropped`
  std::vector<float> dropped;   // the input after dropout
  std::vector<Level> levels;
};

FcStack::FcStack(const std::vector<FcLayerData>& layers, const TrainSettings& settings)
    : settings_(settings), engine_(dnnl::engine::kind::cpu, 0), stream_(engine_) {
  omp_set_num_threads(settings.threads);  // OpenMP settings are per thread: this is the trainer's
  for (const FcLayerData& l : layers) {
    // The weights stay in the layout oneDNN prefers (blocked, for its brgemm kernels, three
    // times faster than plain weights in forward), which forward, backward-data and
    // backward-weights share: no reorder per step, and SGD runs on the blocked buffers alike.
    const memory::desc any({l.outputs, l.inputs}, memory::data_type::f32, tag::any);
    const dnnl::inner_product_forward::primitive_desc probe(
        {dnnl::prop_kind::forward_training, plain({kLayoutBatch, l.inputs}), any, plain({l.outputs}), plain({kLayoutBatch, l.outputs})}, engine_);
    params_.push_back({l.inputs, l.outputs, param(probe.weights_desc(), l.weight, {l.outputs, l.inputs}), param(plain({l.outputs}), l.bias, {l.outputs})});
  }
  masks_.resize(params_.size());
}

// A parameter in layout `md`, from plain float32 values; the padding of a blocked layout is
// zero in the value, its gradient and its momentum, and stays zero.
FcStack::Param FcStack::param(const memory::desc& md, const float* from, memory::dims dims) {
  Param p{memory(md, engine_), memory(md, engine_), std::vector<float>(md.get_size() / sizeof(float))};
  std::memset(data(p.grad), 0, md.get_size());
  memory source(plain(dims), engine_, const_cast<float*>(from));
  dnnl::reorder(source, p.value).execute(stream_, source, p.value);
  stream_.wait();
  return p;
}

FcStack::~FcStack() = default;

FcStack::Pass& FcStack::pass(int n) {
  RunRequest key{nullptr, n, 1, 1, Head::Fixed, {}};  // the cache keys on shape: here the batch size
  return passes_.get(key, [&] {
    auto p = std::make_unique<Pass>();
    p->n = n;
    p->input = memory(plain({n, params_[0].inputs}), engine_, DNNL_MEMORY_NONE);
    for (size_t l = 0; l < params_.size(); l++) {
      const bool hidden = l + 1 < params_.size();
      const memory::desc src = plain({n, params_[l].inputs}), dst = plain({n, params_[l].outputs});
      const memory::desc weight = params_[l].weight.value.get_desc(), bias = params_[l].bias.value.get_desc();
      dnnl::primitive_attr attr;
      if (hidden) {
        dnnl::post_ops relu;
        relu.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
        attr.set_post_ops(relu);
      }
      const dnnl::inner_product_forward::primitive_desc forward(
          {dnnl::prop_kind::forward_training, src, weight, bias, dst}, attr, engine_);
      Pass::Level level;
      level.forward = dnnl::inner_product_forward(forward);
      level.backwardWeights = dnnl::inner_product_backward_weights(
          dnnl::inner_product_backward_weights::primitive_desc({src, weight, bias, dst}, engine_, forward));
      if (l > 0) {
        level.backwardData = dnnl::inner_product_backward_data(
            dnnl::inner_product_backward_data::primitive_desc({src, weight, dst}, engine_, forward));
      }
      if (hidden) {
        const auto alg = dnnl::algorithm::eltwise_relu_use_dst_for_bwd;
        const dnnl::eltwise_forward::primitive_desc hint({dnnl::prop_kind::forward_training, alg, dst, 0.f}, engine_);
        level.reluBackward = dnnl::eltwise_backward(dnnl::eltwise_backward::primitive_desc({alg, dst, dst, 0.f}, engine_, hint));
      }
      level.out = memory(dst, engine_);
      level.grad = memory(dst, engine_);
      p->levels.push_back(std::move(level));
    }
    return p;
  });
}

// Inverted dropout in place: each element kept with probability 1-p and scaled by 1/(1-p),
// as torch.nn.Dropout; the multipliers are kept for the backward pass.
void FcStack::dropout(float* values, size_t count, int site) {
  std::vector<float>& mask = masks_[site];
  mask.resize(count);
  const uint64_t key = splitmix64(splitmix64(splitmix64(settings_.seed) + steps_) + static_cast<uint64_t>(site));
  const float p = settings_.dropout, scale = 1.f / (1.f - p);
#pragma omp parallel for
  for (int64_t i = 0; i < static_cast<int64_t>(count); i++) {
    const float u = static_cast<float>(splitmix64(key + static_cast<uint64_t>(i)) >> 40) * 0x1p-24f;
    mask[i] = u < p ? 0.f : scale;
    values[i] *= mask[i];
  }
}

void FcStack::forward(Pass& p, const float* features, bool training) {
  const bool drop = training && settings_.dropout > 0;
  const size_t inputs = static_cast<size_t>(p.n) * params_[0].inputs;
  if (drop && settings_.inputDropout) {
    p.dropped.assign(features, features + inputs);
    dropout(p.dropped.data(), inputs, 0);
    p.input.set_data_handle(p.dropped.data());
  } else {
    p.input.set_data_handle(const_cast<float*>(features));
  }
  for (size_t l = 0; l < params_.size(); l++) {
    Pass::Level& level = p.levels[l];
    level.forward.execute(stream_, {{DNNL_ARG_SRC, l == 0 ? p.input : p.levels[l - 1].out},
                                    {DNNL_ARG_WEIGHTS, params_[l].weight.value},
                                    {DNNL_ARG_BIAS, params_[l].bias.value},
                                    {DNNL_ARG_DST, level.out}});
    stream_.wait();
    if (drop && l + 1 < params_.size()) dropout(data(level.out), static_cast<size_t>(p.n) * params_[l].outputs, static_cast<int>(l) + 1);
  }
}

StepOut FcStack::step(const float* features, const int32_t* labels, int n, float learningRate) {
  steps_++;
  Pass& p = pass(n);
  forward(p, features, true);

  // Softmax cross-entropy, averaged over the batch (in double: the loss is a sum of n terms).
  const int classes = params_.back().outputs;
  const float* logits = data(p.levels.back().out);
  float* grad = data(p.levels.back().grad);
  StepOut out{0, 0};
  for (int r = 0; r < n; r++) {
    const float* z = logits + static_cast<size_t>(r) * classes;
    float* g = grad + static_cast<size_t>(r) * classes;
    const int best = static_cast<int>(std::max_element(z, z + classes) - z);
    double sum = 0;
    for (int c = 0; c < classes; c++) sum += std::exp(static_cast<double>(z[c]) - z[best]);
    const double logSum = z[best] + std::log(sum);
    out.loss += logSum - z[labels[r]];
    out.correct += best == labels[r];
    for (int c = 0; c < classes; c++) g[c] = static_cast<float>((std::exp(z[c] - logSum) - (c == labels[r])) / n);
  }
  out.loss /= n;

  for (size_t l = params_.size(); l-- > 0;) {
    Pass::Level& level = p.levels[l];
    const memory& src = l == 0 ? p.input : p.levels[l - 1].out;
    level.backwardWeights.execute(stream_, {{DNNL_ARG_SRC, src},
                                            {DNNL_ARG_DIFF_DST, level.grad},
                                            {DNNL_ARG_DIFF_WEIGHTS, params_[l].weight.grad},
                                            {DNNL_ARG_DIFF_BIAS, params_[l].bias.grad}});
    if (l == 0) break;
    Pass::Level& below = p.levels[l - 1];
    level.backwardData.execute(stream_, {{DNNL_ARG_DIFF_DST, level.grad},
                                         {DNNL_ARG_WEIGHTS, params_[l].weight.value},
                                         {DNNL_ARG_DIFF_SRC, below.grad}});
    if (settings_.dropout > 0) {
      stream_.wait();
      const std::vector<float>& mask = masks_[l];
      float* g = data(below.grad);
#pragma omp parallel for
      for (int64_t i = 0; i < static_cast<int64_t>(mask.size()); i++) g[i] *= mask[i];
    }
    // Where dropout zeroed a unit its gradient is zero already: the ReLU's dst may include it.
    below.reluBackward.execute(stream_, {{DNNL_ARG_DST, below.out}, {DNNL_ARG_DIFF_DST, below.grad}, {DNNL_ARG_DIFF_SRC, below.grad}});
  }
  stream_.wait();
  for (Layer& layer : params_) {
    update(layer.weight, learningRate);
    update(layer.bias, learningRate);
  }
  return out;
}

// torch.optim.SGD(momentum, weight_decay, dampening=0, nesterov=False), operation for operation
// in float32: d = g + wd*p; buf = d on the first step, else momentum*buf + d; p = p + (-lr)*buf.
void FcStack::update(Param& param, float learningRate) {
  float* value = data(param.value);
  const float* grad = data(param.grad);
  float* buf = param.momentum.data();
  const bool first = steps_ == 1;
  const float momentum = settings_.momentum, decay = settings_.weightDecay, step = -learningRate;
#pragma omp parallel for
  for (int64_t i = 0; i < static_cast<int64_t>(param.momentum.size()); i++) {
    const float d = grad[i] + decay * value[i];
    buf[i] = first ? d : momentum * buf[i] + d;
    value[i] = value[i] + step * buf[i];
  }
}

void FcStack::predict(const float* features, int n, float* logits) {
  Pass& p = pass(n);
  forward(p, features, false);
  std::memcpy(logits, data(p.levels.back().out), static_cast<size_t>(n) * params_.back().outputs * sizeof(float));
}

void FcStack::copyWeights(size_t layer, float* weight, float* bias) {
  Layer& l = params_[layer];
  memory w(plain({l.outputs, l.inputs}), engine_, weight), b(plain({l.outputs}), engine_, bias);
  dnnl::reorder(l.weight.value, w).execute(stream_, l.weight.value, w);
  dnnl::reorder(l.bias.value, b).execute(stream_, l.bias.value, b);
  stream_.wait();
}

}  // namespace vgg::train
