#include "net.h"

#include <algorithm>
#include <cassert>
#include <cmath>

namespace vgg::onednn {

using dnnl::algorithm;
using dnnl::memory;
using dnnl::prop_kind;
using tag = memory::format_tag;
using dt = memory::data_type;

Net::Net(const Plan& plan, WeightCache& weights, const dnnl::engine& engine, dnnl::stream& stream,
         int n, int h, int w, Head head)
    : weights_(weights), engine_(engine), stream_(stream), n_(n), precision_(plan.precision), winograd_(plan.winograd) {
  input_ = memory({{n, 3, h, w}, dt::f32, tag::nchw}, engine_, DNNL_MEMORY_NONE);
  cur_ = input_;

  int layer = 0;
  for (const FeatureOp& op : plan.features) {
    switch (op.kind) {
      case OpKind::Conv:
        conv({{layer++, op.weight, {op.outC, op.inC, op.kernel, op.kernel}, tag::oihw}, op.bias, true, op.outScale, false},
             op.kernel / 2);
        break;
      case OpKind::MaxPool: maxPool(); break;
      case OpKind::Lrn: lrn(op); break;
    }
    markBlob();
  }

  const FcOp& fc6 = plan.fc[0];
  const FcOp& fc7 = plan.fc[1];
  const FcOp& fc8 = plan.fc[2];
  const memory::dims fc6_dims = {fc6.outF, plan.lastC, kFc6Window, kFc6Window};
  // fc6 reads pool5 as [N, C, 7, 7]; its weights are [out, C*7*7] in CHW order, i.e. OIHW.
  const Layer l6{{layer, fc6.weight, fc6_dims, tag::oihw}, fc6.bias, true, fc6.outScale, false};
  const Layer l7{{layer + 1, fc7.weight, {fc7.outF, fc7.inF}, tag::oi}, fc7.bias, true, fc7.outScale, false};
  const Layer l8{{layer + 2, fc8.weight, {fc8.outF, fc8.inF}, tag::oi}, fc8.bias, false, 1, true};
  if (head == Head::Fixed) {
    adaptiveAvgPool7();
    innerProduct(l6);  markBlob();
    innerProduct(l7);  markBlob();
    innerProduct(l8);  markBlob();
    softmax();         markBlob();
  } else {
    // The paper's dense evaluation: the same fc weights, read as 7x7 and 1x1 convolutions
    // (fc7's and fc8's bytes as OIHW with 1x1 kernels).
    Layer d7 = l7, d8 = l8;
    d7.weights.dims = {fc7.outF, fc7.inF, 1, 1};
    d7.weights.tag = d8.weights.tag = tag::oihw;
    d8.weights.dims = {fc8.outF, fc8.inF, 1, 1};
    conv(l6, 0);             markBlob();
    conv(d7, 0);             markBlob();
    conv(d8, 0, tag::nchw);  markBlob();
    meanOverSpace();  markBlob();
    softmax();        markBlob();
  }
  assert(blobs_.size() == plan.features.size() + headBlobCount(head));  // the numbering readPlan checked
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

// The data type of the activations a layer reads in this precision.
dt Net::activationType(bool first) const {
  if (precision_ == Precision::BF16) return dt::bf16;
  if (precision_ == Precision::I8 && !first) return dt::u8;
  return dt::f32;
}

// int8: the input's scale times each output channel's weight scale is the accumulator's
// scale; output scales bring it to the next layer's, and the bias is moved into it.
dnnl::primitive_attr Net::layerAttr(const Layer& layer, dt src_t, dt dst_t, const float** bias) {
  dnnl::primitive_attr a = attr(layer.relu);
  if (src_t != dt::u8) return a;
  const std::vector<float>& w_scales = weights_.scales(layer.weights);
  const float dst_scale = dst_t == dt::u8 ? layer.outScale : 1.f;
  std::vector<float> out(w_scales.size()), b(w_scales.size());
  for (size_t o = 0; o < w_scales.size(); o++) {
    const float acc_scale = last_scale_ * w_scales[o];
    out[o] = dst_scale / acc_scale;
    b[o] = (*bias)[o] * acc_scale;
  }
  a.set_output_scales(1 << 1, out);
  biases_.push_back(std::move(b));
  *bias = biases_.back().data();
  return a;
}

void Net::conv(const Layer& layer, int pad, tag dst_tag) {
  const memory::dims src_dims = cur_.get_desc().dims();
  const memory::dims& w_dims = layer.weights.dims;
  const int kernel = static_cast<int>(w_dims[2]);
  const memory::dim oh = src_dims[2] - kernel + 1 + 2 * pad, ow = src_dims[3] - kernel + 1 + 2 * pad;
  const bool first = convs_++ == 0;
  const dt src_t = activationType(first);
  const dt dst_t = layer.floatOut ? dt::f32 : src_t;
  const dt w_t = src_t == dt::u8 ? dt::s8 : src_t;
  const float* bias = layer.bias;
  const dnnl::primitive_attr a = layerAttr(layer, src_t, dst_t, &bias);

  auto make = [&](algorithm alg) {
    return withHeldWeights<dnnl::convolution_forward::primitive_desc>(layer.weights.layer, {w_dims, w_t, tag::any}, [&](const memory::desc& w_md) {
      dnnl::convolution_forward::desc d(
          prop_kind::forward_inference, alg, {src_dims, src_t, tag::any}, w_md,
          {{w_dims[0]}, dt::f32, tag::x}, {{n_, w_dims[0], oh, ow}, dst_t, dst_tag}, {1, 1}, {pad, pad}, {pad, pad});
      return dnnl::convolution_forward::primitive_desc(d, a, engine_);
    });
  };
  dnnl::convolution_forward::primitive_desc pd;
  if (winograd_ && kernel == 3 && src_t == dt::f32) {
    try {
      pd = make(algorithm::convolution_winograd);
    } catch (const dnnl::error&) {
      pd = make(algorithm::convolution_direct);  // no Winograd kernel for this shape (3 input channels)
    }
  } else {
    pd = make(algorithm::convolution_direct);
  }

  pushWeighted(dnnl::convolution_forward(pd), pd, layer, bias);
}

void Net::maxPool() {
  const memory::desc src_md = cur_.get_desc();
  const memory::dims d = src_md.dims();
  dnnl::pooling_forward::desc desc(prop_kind::forward_inference, algorithm::pooling_max, src_md,
                                   {{d[0], d[1], d[2] / 2, d[3] / 2}, src_md.data_type(), tag::any},
                                   {2, 2}, {2, 2}, {0, 0}, {0, 0});
  dnnl::pooling_forward::primitive_desc pd(desc, attr(false), engine_);
  memory src = cur_;
  memory dst = next(pd.dst_desc(), cur_scale_);
  push(dnnl::pooling_forward(pd), {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}}, pd);
}

// oneDNN's LRN has no integer kernel: in int8 it runs in float32.
void Net::lrn(const FeatureOp& op) {
  memory::desc md = cur_.get_desc();
  if (md.data_type() == dt::u8) md = memory::desc(md.dims(), dt::f32, tag::nhwc);
  memory src = relayout(md, kStaging);
  dnnl::lrn_forward::desc desc(prop_kind::forward_inference, algorithm::lrn_across_channels, md,
                               op.lrnSize, op.alpha, op.beta, op.k);
  dnnl::lrn_forward::primitive_desc pd(desc, attr(false), engine_);
  memory dst = next(pd.dst_desc(), 1.f);
  last_scale_ = op.outScale;
  push(dnnl::lrn_forward(pd), {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}}, pd);
}

// torchvision's AdaptiveAvgPool2d((7, 7)): window i spans [floor(i*H/7), ceil((i+1)*H/7)).
// The windows overlap and differ in size unless H is a multiple of 7, which no oneDNN pooling
// expresses; pool5 is small, so a plain loop costs nothing next to fc6.
void Net::adaptiveAvgPool7() {
  const memory::dims d = cur_.get_desc().dims();
  const memory::dim N = d[0], C = d[1], H = d[2], W = d[3];
  if (H == kFc6Window && W == kFc6Window) return;  // identity at 224x224
  memory plain = relayout(output_desc(d, tag::nchw), kPlain);

  memory pooled = inSlot(output_desc({N, C, kFc6Window, kFc6Window}, tag::nchw), kPooled);
  Step step;
  step.custom = [plain, pooled, N, C, H, W]() {
    const float* src = static_cast<const float*>(plain.get_data_handle());
    float* dst = static_cast<float*>(pooled.get_data_handle());
    for (memory::dim p = 0; p < N * C; p++, src += H * W) {
      for (int oy = 0; oy < kFc6Window; oy++) {
        const memory::dim y0 = oy * H / kFc6Window, y1 = ((oy + 1) * H + kFc6Window - 1) / kFc6Window;
        for (int ox = 0; ox < kFc6Window; ox++) {
          const memory::dim x0 = ox * W / kFc6Window, x1 = ((ox + 1) * W + kFc6Window - 1) / kFc6Window;
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

void Net::innerProduct(const Layer& layer) {
  // Whatever layout pool5 has (fc6) is read as is; the weights follow it.
  memory::desc src_md = cur_.get_desc();
  const dt src_t = activationType(false);
  if (src_md.data_type() != src_t) src_md = memory::desc(src_md.dims(), src_t, src_md.dims().size() == 4 ? tag::nchw : tag::nc);
  const dt dst_t = layer.floatOut ? dt::f32 : src_t;
  const float* bias = layer.bias;
  const dnnl::primitive_attr a = layerAttr(layer, src_t, dst_t, &bias);
  const memory::dim outF = layer.weights.dims[0];
  const memory::desc any_w(layer.weights.dims, src_t == dt::u8 ? dt::s8 : src_t, tag::any);
  auto pd = withHeldWeights<dnnl::inner_product_forward::primitive_desc>(layer.weights.layer, any_w, [&](const memory::desc& w_md) {
    dnnl::inner_product_forward::desc d(prop_kind::forward_inference, src_md, w_md, {{outF}, dt::f32, tag::x}, {{n_, outF}, dst_t, tag::nc});
    return dnnl::inner_product_forward::primitive_desc(d, a, engine_);
  });
  pushWeighted(dnnl::inner_product_forward(pd), pd, layer, bias);
}

// Dense head: the class score map averaged over space, as [N, classes, 1, 1] in NCHW.
void Net::meanOverSpace() {
  const memory::dims d = cur_.get_desc().dims();
  const memory::desc mean_md({d[0], d[1], 1, 1}, dt::f32, tag::nchw);
  if (d[2] == 1 && d[3] == 1) {  // a 224x224 input: nothing to average, and oneDNN refuses a reduction that reduces nothing
    relayout(mean_md, cur_slot_ == kPing ? kPong : kPing);
    return;
  }
  dnnl::reduction::desc desc(algorithm::reduction_mean, cur_.get_desc(), mean_md, 0.f, 0.f);
  dnnl::reduction::primitive_desc pd(desc, attr(false), engine_);
  memory src = cur_;
  memory dst = next(pd.dst_desc(), 1.f);
  push(dnnl::reduction(pd), {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}}, pd);
}

void Net::softmax() {
  const memory::dims d = cur_.get_desc().dims();
  const memory::desc md({d[0], d[1]}, dt::f32, tag::nc);  // [N, classes] (a 1x1 map in the dense head)
  dnnl::softmax_forward::desc desc(prop_kind::forward_inference, md, 1);
  dnnl::softmax_forward::primitive_desc pd(desc, attr(false), engine_);
  memory src = inSlot(md, cur_slot_);
  memory dst = next(md, 1.f);
  push(dnnl::softmax_forward(pd), {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}}, pd);
}

// The activation just produced is the next blob: prepare its reorder into a plain caller array.
void Net::markBlob() {
  const memory::dims d = cur_.get_desc().dims();
  memory dst(output_desc(d, d.size() == 4 ? tag::nchw : tag::nc), engine_, DNNL_MEMORY_NONE);
  blobs_.push_back({steps_.size() - 1, cur_, dst, convert(cur_, dst, 1.f)});
}

// ---- plumbing ----------------------------------------------------------------

// A chosen convolution or inner product as a step: its input in the layout it wants, its
// weights from the cache, its output in the next buffer with the layer's scale (u8 outputs).
void Net::pushWeighted(dnnl::primitive prim, const dnnl::primitive_desc_base& pd, const Layer& layer, const float* bias) {
  memory src = relayout(pd.src_desc(0), kStaging);
  memory w = weights_.get(layer.weights, pd.weights_desc(0), stream_);
  memory b(pd.weights_desc(1), engine_, const_cast<float*>(bias));  // the bias; read-only for oneDNN
  const memory::desc dst_md = pd.dst_desc(0);
  memory dst = next(dst_md, dst_md.data_type() == dt::u8 ? layer.outScale : 1.f);
  last_scale_ = layer.outScale;
  push(std::move(prim), {{DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, w}, {DNNL_ARG_BIAS, b}, {DNNL_ARG_DST, dst}}, pd);
}

// Weights already held in a layout (another input shape's, or a packed file's) are used as they
// are when an optimized implementation accepts them: one copy per layer, in memory and on disk.
template <typename Pd, typename Make>
Pd Net::withHeldWeights(int layer, const memory::desc& any, Make make) {
  for (const memory::desc& held : weights_.layouts(layer)) {
    try {
      Pd pd = make(held);
      if (std::string(pd.impl_info_str()).find("ref") == std::string::npos) return pd;
    } catch (const dnnl::error&) {
      // this implementation wants its own layout
    }
  }
  return make(any);
}

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
  const float to_scale = want.data_type() == dt::u8 ? last_scale_ : 1.f;
  Step step;
  step.prim = convert(cur_, to, to_scale);
  step.args = {{DNNL_ARG_FROM, cur_}, {DNNL_ARG_TO, to}};
  steps_.push_back(std::move(step));
  cur_ = to;
  cur_slot_ = slot;
  cur_scale_ = to_scale;
  return to;
}

// A reorder that also changes the data type, rescaling from the current activation's scale
// to `to_scale` (1 for float types).
dnnl::reorder Net::convert(const memory& from, const memory& to, float to_scale) const {
  dnnl::primitive_attr a;
  if (to_scale != cur_scale_) a.set_output_scales(0, {to_scale / cur_scale_});
  return dnnl::reorder(dnnl::reorder::primitive_desc(from, to, a));
}

// Where a step writes: the ping-pong buffer the current activation is not in.
memory Net::next(const memory::desc& md, float scale) {
  cur_slot_ = cur_slot_ == kPing ? kPong : kPing;
  cur_ = inSlot(md, cur_slot_);
  cur_scale_ = scale;
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
  arena_ = allocateHuge(total);
  for (auto& [mem, slot] : slot_users_) mem.set_data_handle(arena_.get() + offset[slot]);
}

}  // namespace vgg::onednn
