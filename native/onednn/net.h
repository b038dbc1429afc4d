// One VGG compiled for one input shape and head: oneDNN primitives in network order,
// activations ping-ponging between two arena buffers, each requested blob reordered
// straight into the caller's array right after the step that produced it.
#pragma once
#include <functional>
#include <memory>
#include <unordered_map>
#include <vector>
#include "../plan.h"
#include "oneapi/dnnl/dnnl.hpp"
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

  // Builders, called in network order.
  void conv(const float* weight, const float* bias, int inC, int outC, int kernel, int pad, bool relu,
            dnnl::memory::format_tag dst_tag = dnnl::memory::format_tag::any);
  void maxPool();
  void lrn(const FeatureOp& op);
  void adaptiveAvgPool7();
  void innerProduct(const FcOp& fc, bool relu);
  void meanOverSpace();
  void softmax();
  void markBlob();

  dnnl::memory::desc output_desc(const dnnl::memory::dims& dims, dnnl::memory::format_tag tag) const;
  dnnl::memory inSlot(const dnnl::memory::desc& md, int slot);
  dnnl::memory relayout(const dnnl::memory::desc& want, int slot);
  dnnl::memory next(const dnnl::memory::desc& md);
  dnnl::primitive_attr attr(bool relu) const;
  void push(dnnl::primitive prim, std::unordered_map<int, dnnl::memory> args, const dnnl::primitive_desc_base& pd);
  void allocate();

  WeightCache& weights_;
  dnnl::engine engine_;
  dnnl::stream& stream_;
  int n_;

  dnnl::memory input_;
  dnnl::memory cur_;  // the activation the next step reads
  int cur_slot_ = kInput;

  std::vector<Step> steps_;
  std::vector<Blob> blobs_;
  std::vector<std::pair<dnnl::memory, int>> slot_users_;
  size_t slot_bytes_[kSlots] = {};
  std::unique_ptr<char, void (*)(void*)> arena_{nullptr, std::free};
};

}  // namespace vgg::onednn
