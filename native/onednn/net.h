// One VGG compiled for one input shape and head: oneDNN primitives in network order,
// activations ping-ponging between two arena buffers, each requested blob reordered
// straight into the caller's array (as float32) right after the step that produced it.
// In bf16 the activations between layers are bf16; in int8 they are u8 with the calibrated
// scale of the layer that produced them (the first convolution, whose input is the signed
// image, and LRN run in float32).
#pragma once
#include <functional>
#include <memory>
#include <unordered_map>
#include <vector>
#include "../plan.h"
#include "oneapi/dnnl/dnnl.hpp"
#include "huge_pages.h"
#include "weight_cache.h"

namespace vgg::onednn {

class Net {
 public:
  Net(const Plan& plan, WeightCache& weights, const dnnl::engine& engine, dnnl::stream& stream,
      int n, int h, int w, Head head);
  void run(const RunRequest& request, dnnl::stream& stream);

 private:
  // Arena slots. Activations alternate between kPing and kPong; kStaging holds a layout
  // change before a primitive; kPlain holds pool5 in NCHW and kPooled its 7x7 average.
  enum Slot { kInput = -1, kPing, kPong, kStaging, kPlain, kPooled, kScratch, kSlots };

  struct Step {
    dnnl::primitive prim;
    std::unordered_map<int, dnnl::memory> args;
    std::function<void()> custom;  // the one op oneDNN has no primitive for
  };
  struct Blob {
    size_t after_step;  // index of the step that produced it
    dnnl::memory src, dst;
    dnnl::reorder to_plain;
  };

  // A convolution or inner product as the builders take it.
  struct Layer {
    WeightSource weights;
    const float* bias;
    bool relu;
    float outScale;   // int8: the scale its u8 output gets
    bool floatOut;    // fc8: float32 output whatever the precision
  };

  // Builders, called in network order.
  void conv(const Layer& layer, int pad, dnnl::memory::format_tag dst_tag = dnnl::memory::format_tag::any);
  void maxPool();
  void lrn(const FeatureOp& op);
  void adaptiveAvgPool7();
  void innerProduct(const Layer& layer);
  void meanOverSpace();
  void softmax();
  void markBlob();

  dnnl::memory::desc output_desc(const dnnl::memory::dims& dims, dnnl::memory::format_tag tag) const;
  dnnl::memory::data_type activationType(bool first) const;
  dnnl::primitive_attr layerAttr(const Layer& layer, dnnl::memory::data_type src_t, dnnl::memory::data_type dst_t,
                                 const float** bias);
  void pushWeighted(dnnl::primitive prim, const dnnl::primitive_desc_base& pd, const Layer& layer, const float* bias);
  template <typename Pd, typename Make>
  Pd withHeldWeights(int layer, const dnnl::memory::desc& any, Make make);
  dnnl::memory inSlot(const dnnl::memory::desc& md, int slot);
  dnnl::memory relayout(const dnnl::memory::desc& want, int slot);
  dnnl::reorder convert(const dnnl::memory& from, const dnnl::memory& to, float to_scale) const;
  dnnl::memory next(const dnnl::memory::desc& md, float scale);  // scale: as cur_scale_
  dnnl::primitive_attr attr(bool relu) const;
  void push(dnnl::primitive prim, std::unordered_map<int, dnnl::memory> args, const dnnl::primitive_desc_base& pd);
  void allocate();

  WeightCache& weights_;
  dnnl::engine engine_;
  dnnl::stream& stream_;
  int n_;
  Precision precision_;
  bool winograd_;

  dnnl::memory input_;
  dnnl::memory cur_;  // the activation the next step reads
  int cur_slot_ = kInput;
  float cur_scale_ = 1;   // u8 activations: stored value = real value * scale
  float last_scale_ = 1;  // int8: the calibrated scale of the last layer with one
  int convs_ = 0;
  std::vector<std::vector<float>> biases_;  // int8: biases in the accumulator's scale

  std::vector<Step> steps_;
  std::vector<Blob> blobs_;
  std::vector<std::pair<dnnl::memory, int>> slot_users_;
  size_t slot_bytes_[kSlots] = {};
  HugeBuffer arena_{nullptr, std::free};
};

}  // namespace vgg::onednn
