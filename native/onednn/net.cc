#include "net.h"

#include <algorithm>
#include <cmath>

namespace vgg::onednn {

using dnnl::algorithm;
using dnnl::memory;
using dnnl::prop_kind;
using tag = memory::format_tag;
using dt = memory::data_type;

namespace {
constexpr int kWindow = 7;  // pool5 -> 7x7 before fc6, and fc6 as a 7x7 conv in the dense head
}

Net::Net(const Plan& plan, WeightCache& weights, const dnnl::engine& engine, dnnl::stream& stream,
         int n, int h, int w, Head head)
    : weights_(weights), engine_(engine), stream_(stream), n_(n) {
  input_ = memory({{n, 3, h, w}, dt::f32, tag::nchw}, engine_, DNNL_MEMORY_NONE);
  cur_ = input_;

  for (const FeatureOp& op : plan.features) {
    switch (op.kind) {
      case OpKind::Conv: conv(op.weight, op.bias, op.inC, op.outC, op.kernel, op.kernel / 2, true); break;
      case OpKind::MaxPool: maxPool(); break;
      case OpKind::Lrn: lrn(op); break;
    }
    markBlob();
  }

  const FcOp& fc6 = plan.fc[0];
  const FcOp& fc7 = plan.fc[1];
  const FcOp& fc8 = plan.fc[2];
  if (head == Head::Fixed) {
    adaptiveAvgPool7();
    innerProduct(fc6, true);   markBlob();
    innerProduct(fc7, true);   markBlob();
    innerProduct(fc8, false);  markBlob();
    softmax();                 markBlob();
  } else {
    // The paper's dense evaluation: the same fc weights, read as 7x7 and 1x1 convolutions.
    conv(fc6.weight, fc6.bias, plan.lastC, fc6.outF, kWindow, 0, true);  markBlob();
    conv(fc7.weight, fc7.bias, fc7.inF, fc7.outF, 1, 0, true);           markBlob();
    conv(fc8.weight, fc8.bias, fc8.inF, fc8.outF, 1, 0, false, tag::nchw); markBlob();
    meanOverSpace();  markBlob();
    softmax();        markBlob();
  }
  allocate();
}

void Net::run(const RunRequest& request, dnnl::stream& stream) {
  input_.set_data_handle(const_cast<float*>(request.input));
  size_t next_blob = 0;
  std::vector<const Capture*> wanted(blobs_.size(), nullptr);
  for (const Capture& c : request.captures) wanted[c.blob] = &c;

  for (size_t i = 0; i < steps_.size(); i++) {
    Step& s = steps_[i];
    if (s.custom) s.custom();
    else s.prim.execute(stream, s.args);
    for (; next_blob < blobs_.size() && blobs_[next_blob].after_step == i; next_blob++) {
      if (!wanted[next_blob]) continue;
      Blob& b = blobs_[next_blob];
      b.dst.set_data_handle(wanted[next_blob]->out);
      b.to_plain.execute(stream, b.src, b.dst);
    }
  }
  stream.wait();
}

// ---- builders ----------------------------------------------------------------

void Net::conv(const float* weight, const float* bias, int inC, int outC, int kernel, int pad, bool relu,
               tag dst_tag) {
  const memory::dims src_dims = cur_.get_desc().dims();
  const memory::dim oh = src_dims[2] - kernel + 1 + 2 * pad, ow = src_dims[3] - kernel + 1 + 2 * pad;
  const memory::dims w_dims = {outC, inC, kernel, kernel};
  dnnl::convolution_forward::desc d(
      prop_kind::forward_inference, algorithm::convolution_direct,
      {src_dims, dt::f32, tag::any}, {w_dims, dt::f32, tag::any}, {{outC}, dt::f32, tag::x},
      {{n_, outC, oh, ow}, dt::f32, dst_tag}, {1, 1}, {pad, pad}, {pad, pad});
  dnnl::convolution_forward::primitive_desc pd(d, attr(relu), engine_);

  memory src = relayout(pd.src_desc(), kStaging);
  memory w = weights_.get(weight, w_dims, tag::oihw, pd.weights_desc(), stream_);
  memory b(pd.bias_desc(), engine_, const_cast<float*>(bias));  // read-only for oneDNN
  memory dst = next(pd.dst_desc());
  push(dnnl::convolution_forward(pd), {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_BIAS, b}, {DNNL_ARG_DST, dst}}, pd);
}

void Net::maxPool() {
  const memory::desc src_md = cur_.get_desc();
  const memory::dims d = src_md.dims();
  dnnl::pooling_forward::desc desc(prop_kind::forward_inference, algorithm::pooling_max, src_md,
                                   {{d[0], d[1], d[2] / 2, d[3] / 2}, dt::f32, tag::any},
                                   {2, 2}, {2, 2}, {0, 0}, {0, 0});
  dnnl::pooling_forward::primitive_desc pd(desc, attr(false), engine_);
  memory src = cur_;
  memory dst = next(pd.dst_desc());
  push(dnnl::pooling_forward(pd), {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}}, pd);
}

void Net::lrn(const FeatureOp& op) {
  dnnl::lrn_forward::desc desc(prop_kind::forward_inference, algorithm::lrn_across_channels, cur_.get_desc(),
                               op.lrnSize, op.alpha, op.beta, op.k);
  dnnl::lrn_forward::primitive_desc pd(desc, attr(false), engine_);
  memory src = cur_;
  memory dst = next(pd.dst_desc());
  push(dnnl::lrn_forward(pd), {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}}, pd);
}

// torchvision's AdaptiveAvgPool2d((7, 7)): window i spans [floor(i*H/7), ceil((i+1)*H/7)).
// The windows overlap and differ in size unless H is a multiple of 7, which no oneDNN pooling
// expresses; pool5 is small, so a plain loop costs nothing next to fc6.
void Net::adaptiveAvgPool7() {
  const memory::dims d = cur_.get_desc().dims();
  const memory::dim N = d[0], C = d[1], H = d[2], W = d[3];
  memory plain = relayout(output_desc(d, tag::nchw), kPlain);
  if (H == kWindow && W == kWindow) return;  // identity at 224x224

  memory pooled = inSlot(output_desc({N, C, kWindow, kWindow}, tag::nchw), kPooled);
  Step step;
  step.custom = [plain, pooled, N, C, H, W]() {
    const float* src = static_cast<const float*>(plain.get_data_handle());
    float* dst = static_cast<float*>(pooled.get_data_handle());
    for (memory::dim p = 0; p < N * C; p++, src += H * W) {
      for (int oy = 0; oy < kWindow; oy++) {
        const memory::dim y0 = oy * H / kWindow, y1 = ((oy + 1) * H + kWindow - 1) / kWindow;
        for (int ox = 0; ox < kWindow; ox++) {
          const memory::dim x0 = ox * W / kWindow, x1 = ((ox + 1) * W + kWindow - 1) / kWindow;
          float sum = 0;
          for (memory::dim y = y0; y < y1; y++)
            for (memory::dim x = x0; x < x1; x++) sum += src[y * W + x];
          *dst++ = sum / static_cast<float>((y1 - y0) * (x1 - x0));
        }
      }
    }
  };
  steps_.push_back(std::move(step));
  cur_ = pooled;
  cur_slot_ = kPooled;
}

void Net::innerProduct(const FcOp& fc, bool relu) {
  const memory::desc src_md = cur_.get_desc();
  const memory::dims src_dims = src_md.dims();
  // fc6 reads pool5 as [N, C, 7, 7]; its weights are [out, C*49] in CHW order, i.e. OIHW.
  memory::dims w_dims = src_dims;
  w_dims[0] = fc.outF;
  const tag w_tag = w_dims.size() == 4 ? tag::oihw : tag::oi;
  dnnl::inner_product_forward::desc d(prop_kind::forward_inference, src_md, {w_dims, dt::f32, tag::any},
                                      {{fc.outF}, dt::f32, tag::x}, {{n_, fc.outF}, dt::f32, tag::nc});
  dnnl::inner_product_forward::primitive_desc pd(d, attr(relu), engine_);
  memory w = weights_.get(fc.weight, w_dims, w_tag, pd.weights_desc(), stream_);
  memory b(pd.bias_desc(), engine_, const_cast<float*>(fc.bias));
  memory src = cur_;
  memory dst = next(pd.dst_desc());
  push(dnnl::inner_product_forward(pd), {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_BIAS, b}, {DNNL_ARG_DST, dst}}, pd);
}

// Dense head: the class score map averaged over space, as [N, classes, 1, 1] in NCHW.
void Net::meanOverSpace() {
  const memory::dims d = cur_.get_desc().dims();
  dnnl::reduction::desc desc(algorithm::reduction_mean, cur_.get_desc(), {{d[0], d[1], 1, 1}, dt::f32, tag::nchw}, 0.f, 0.f);
  dnnl::reduction::primitive_desc pd(desc, attr(false), engine_);
  memory src = cur_;
  memory dst = next(pd.dst_desc());
  push(dnnl::reduction(pd), {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}}, pd);
}

void Net::softmax() {
  const memory::dims d = cur_.get_desc().dims();
  const memory::desc md({d[0], d[1]}, dt::f32, tag::nc);  // [N, classes] (a 1x1 map in the dense head)
  dnnl::softmax_forward::desc desc(prop_kind::forward_inference, md, 1);
  dnnl::softmax_forward::primitive_desc pd(desc, attr(false), engine_);
  memory src = inSlot(md, cur_slot_);
  memory dst = next(md);
  push(dnnl::softmax_forward(pd), {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}}, pd);
}

// The activation just produced is the next blob: prepare its reorder into a plain caller array.
void Net::markBlob() {
  const memory::dims d = cur_.get_desc().dims();
  memory dst(output_desc(d, d.size() == 4 ? tag::nchw : tag::nc), engine_, DNNL_MEMORY_NONE);
  blobs_.push_back({steps_.size() - 1, cur_, dst, dnnl::reorder(cur_, dst)});
}

// ---- plumbing ----------------------------------------------------------------

memory::desc Net::output_desc(const memory::dims& dims, tag t) const { return {dims, dt::f32, t}; }

memory Net::inSlot(const memory::desc& md, int slot) {
  memory m(md, engine_, DNNL_MEMORY_NONE);
  slot_users_.emplace_back(m, slot);
  slot_bytes_[slot] = std::max(slot_bytes_[slot], md.get_size());
  return m;
}

// Makes the current activation have the layout `want`, through a reorder into `slot` when it differs.
memory Net::relayout(const memory::desc& want, int slot) {
  if (cur_.get_desc() == want) return cur_;
  memory to = inSlot(want, slot);
  Step step;
  step.prim = dnnl::reorder(cur_, to);
  step.args = {{DNNL_ARG_FROM, cur_}, {DNNL_ARG_TO, to}};
  steps_.push_back(std::move(step));
  cur_ = to;
  cur_slot_ = slot;
  return to;
}

// Where a step writes: the ping-pong buffer the current activation is not in.
memory Net::next(const memory::desc& md) {
  cur_slot_ = cur_slot_ == kPing ? kPong : kPing;
  cur_ = inSlot(md, cur_slot_);
  return cur_;
}

dnnl::primitive_attr Net::attr(bool relu) const {
  dnnl::primitive_attr a;
  // Each executor owns its scratchpad: oneDNN's default one is shared per process.
  a.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  if (relu) {
    dnnl::post_ops ops;
    ops.append_eltwise(1.f, algorithm::eltwise_relu, 0.f, 0.f);
    a.set_post_ops(ops);
  }
  return a;
}

void Net::push(dnnl::primitive prim, std::unordered_map<int, memory> args, const dnnl::primitive_desc_base& pd) {
  args.emplace(DNNL_ARG_SCRATCHPAD, inSlot(pd.scratchpad_desc(), kScratch));
  steps_.push_back({std::move(prim), std::move(args), nullptr});
}

void Net::allocate() {
  constexpr size_t kAlign = 64;
  size_t offset[kSlots], total = 0;
  for (int s = 0; s < kSlots; s++) {
    offset[s] = total;
    total += (slot_bytes_[s] + kAlign - 1) / kAlign * kAlign;
  }
  arena_.reset(static_cast<char*>(std::aligned_alloc(kAlign, std::max(total, kAlign))));
  if (!arena_) throw std::bad_alloc();
  for (auto& [mem, slot] : slot_users_) mem.set_data_handle(arena_.get() + offset[slot]);
}

}  // namespace vgg::onednn
