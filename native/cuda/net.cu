#include "net.h"

#include <algorithm>
#include <cassert>
#include <cstdio>
#include <cstdlib>
#include "check.h"

namespace vgg::cuda {

namespace {
const float kOne = 1.f, kZero = 0.f;

cudnnDataType_t dnnType(DType t) {
  return t == DType::F32 ? CUDNN_DATA_FLOAT : t == DType::BF16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_HALF;
}
cudaDataType_t ltType(DType t) { return t == DType::F32 ? CUDA_R_32F : t == DType::BF16 ? CUDA_R_16BF : CUDA_R_16F; }
}  // namespace

Net::Net(Context& ctx, const Plan& plan, int n, int h, int w, Head head)
    : ctx_(ctx), input_(size_t(n) * 3 * h * w * sizeof(float)), shape_{n, h, w} {
  try {
    build(plan, n, h, w, head);
  } catch (...) {
    for (auto& f : cleanup_) f();  // the destructor does not run for a half-built object
    throw;
  }
}

void Net::build(const Plan& plan, int n, int h, int w, Head head) {
  toNhwc(n, h, w);
  size_t convIndex = 0;
  for (const FeatureOp& op : plan.features) {
    switch (op.kind) {
      case OpKind::Conv: { const DeviceLayer& l = ctx_.convs[convIndex++]; conv(l, l.kernel / 2, true); break; }
      case OpKind::MaxPool: maxPool(); break;
      case OpKind::Lrn: lrn(op); break;
    }
  }
  if (head == Head::Fixed) {
    adaptiveAvgPool7();
    fullyConnected(ctx_.fc[0], true);
    fullyConnected(ctx_.fc[1], true);
    fullyConnected(ctx_.fc[2], false);
    softmax();
  } else {
    // The paper's dense evaluation: the same fc weights, read as 7x7 and 1x1 convolutions.
    conv(ctx_.fc[0], 0, true);
    conv(ctx_.fc[1], 0, true);
    conv(ctx_.fc[2], 0, false);
    meanOverSpace();
    softmax();
  }
  assert(blobs_.size() == plan.features.size() + headBlobCount(head));  // the numbering readPlan checked
  CUDA_CHECK(cudaStreamSynchronize(ctx_.compute));
  const char* graphs = std::getenv("VGGNET_CUDA_GRAPHS");
  if (!graphs || std::string(graphs) != "0") captureGraph();
}

Net::~Net() {
  if (graph_) cudaGraphExecDestroy(graph_);
  for (auto& f : cleanup_) f();
}

void Net::launch() {
  if (graph_) {
    CUDA_CHECK(cudaGraphLaunch(graph_, ctx_.compute));
  } else {
    for (Step& s : steps_) s(ctx_.compute);
  }
}

// ---- builders ----------------------------------------------------------------

void Net::toNhwc(int n, int h, int w) {
  const Blob x = alloc(ctx_.dtype, n, ctx_.inputChannels, h, w);
  const float* in = input();
  const Context& c = ctx_;
  steps_.push_back([in, x, &c](cudaStream_t s) { inputToNhwc(in, const_cast<void*>(x.data), c.dtype, x.n, 3, x.h, x.w, x.c, s); });
  cur_ = x;  // not a blob: TypeScript's blob 0 is conv1_1
}

void Net::conv(const DeviceLayer& layer, int pad, bool relu) {
  const auto& dnn = ctx_.libs.dnn;
  const Blob x = cur_;
  const Blob y = alloc(ctx_.dtype, x.n, layer.out, x.h + 2 * pad - layer.kernel + 1, x.w + 2 * pad - layer.kernel + 1);
  const cudnnDataType_t dt = dnnType(ctx_.dtype);

  cudnnTensorDescriptor_t xd, yd, bd;
  cudnnFilterDescriptor_t wd;
  cudnnConvolutionDescriptor_t cd;
  cudnnActivationDescriptor_t ad;
  ctx_.dnnCheck(dnn.cudnnCreateTensorDescriptor(&xd), "cudnnCreateTensorDescriptor");
  ctx_.dnnCheck(dnn.cudnnCreateTensorDescriptor(&yd), "cudnnCreateTensorDescriptor");
  ctx_.dnnCheck(dnn.cudnnCreateTensorDescriptor(&bd), "cudnnCreateTensorDescriptor");
  ctx_.dnnCheck(dnn.cudnnCreateFilterDescriptor(&wd), "cudnnCreateFilterDescriptor");
  ctx_.dnnCheck(dnn.cudnnCreateConvolutionDescriptor(&cd), "cudnnCreateConvolutionDescriptor");
  ctx_.dnnCheck(dnn.cudnnCreateActivationDescriptor(&ad), "cudnnCreateActivationDescriptor");
  cleanup_.push_back([&dnn, xd, yd, bd, wd, cd, ad] {
    dnn.cudnnDestroyTensorDescriptor(xd); dnn.cudnnDestroyTensorDescriptor(yd); dnn.cudnnDestroyTensorDescriptor(bd);
    dnn.cudnnDestroyFilterDescriptor(wd); dnn.cudnnDestroyConvolutionDescriptor(cd); dnn.cudnnDestroyActivationDescriptor(ad);
  });
  ctx_.dnnCheck(dnn.cudnnSetTensor4dDescriptor(xd, CUDNN_TENSOR_NHWC, dt, x.n, x.c, x.h, x.w), "cudnnSetTensor4dDescriptor(x)");
  ctx_.dnnCheck(dnn.cudnnSetTensor4dDescriptor(yd, CUDNN_TENSOR_NHWC, dt, y.n, y.c, y.h, y.w), "cudnnSetTensor4dDescriptor(y)");
  ctx_.dnnCheck(dnn.cudnnSetTensor4dDescriptor(bd, CUDNN_TENSOR_NHWC, dt, 1, y.c, 1, 1), "cudnnSetTensor4dDescriptor(bias)");
  ctx_.dnnCheck(dnn.cudnnSetFilter4dDescriptor(wd, dt, CUDNN_TENSOR_NHWC, layer.out, layer.inPadded, layer.kernel, layer.kernel), "cudnnSetFilter4dDescriptor");
  ctx_.dnnCheck(dnn.cudnnSetConvolution2dDescriptor(cd, pad, pad, 1, 1, 1, 1, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT), "cudnnSetConvolution2dDescriptor");
  // fp32 stays fp32: FMA math keeps TF32 tensor cores out, as PyTorch does with allow_tf32 off.
  const cudnnMathType_t math = ctx_.dtype == DType::F32 ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH;
  ctx_.dnnCheck(dnn.cudnnSetConvolutionMathType(cd, math), "cudnnSetConvolutionMathType");
  ctx_.dnnCheck(dnn.cudnnSetActivationDescriptor(ad, CUDNN_ACTIVATION_RELU, CUDNN_NOT_PROPAGATE_NAN, 0.0), "cudnnSetActivationDescriptor");

  // Measure the algorithms on the real buffers, as cudnn.benchmark does.
  cudnnConvolutionFwdAlgoPerf_t perf[16];
  int found = 0;
  ctx_.dnnCheck(dnn.cudnnFindConvolutionForwardAlgorithmEx(ctx_.dnn, xd, x.data, wd, layer.weight.ptr, cd, yd, const_cast<void*>(y.data),
                                                           16, &found, perf, ctx_.workspace.ptr, ctx_.workspace.bytes),
                "cudnnFindConvolutionForwardAlgorithmEx");
  // fp32 keeps FMA math whatever an algorithm reports: DEFAULT_MATH would let TF32 in.
  const bool fp32 = ctx_.dtype == DType::F32;
  const cudnnConvolutionFwdAlgoPerf_t* best = nullptr;
  for (int i = 0; i < found && !best; i++) {
    const bool tensorOps = perf[i].mathType == CUDNN_TENSOR_OP_MATH || perf[i].mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION;
    if (perf[i].status == 0 && perf[i].memory <= ctx_.workspace.bytes && !(fp32 && tensorOps)) best = &perf[i];
  }
  if (!best) throw std::runtime_error("cuDNN found no convolution algorithm for a " + std::to_string(layer.kernel) + "x" +
                                      std::to_string(layer.kernel) + " conv of " + std::to_string(layer.inPadded) + " channels");
  const cudnnConvolutionFwdAlgo_t algo = best->algo;
  if (!fp32) ctx_.dnnCheck(dnn.cudnnSetConvolutionMathType(cd, best->mathType), "cudnnSetConvolutionMathType");

  void* ws = ctx_.workspace.ptr;
  const size_t wsBytes = ctx_.workspace.bytes;
  const void* w = layer.weight.ptr;
  const void* b = layer.bias.ptr;
  void* out = const_cast<void*>(y.data);
  cudnnHandle_t h = ctx_.dnn;
  const Context& c = ctx_;
  // Bias and ReLU fused into the convolution where cuDNN offers it for this configuration.
  auto fused = [=, &dnn](cudaStream_t) {
    return dnn.cudnnConvolutionBiasActivationForward(h, &kOne, xd, x.data, wd, w, cd, algo, ws, wsBytes, &kZero, yd, out, bd, b, ad, yd, out);
  };
  if (relu && fused(ctx_.compute) == 0) {
    steps_.push_back([fused, &c](cudaStream_t s) { c.dnnCheck(fused(s), "cudnnConvolutionBiasActivationForward"); });
  } else {
    const size_t pixels = size_t(y.n) * y.h * y.w;
    steps_.push_back([=, &dnn, &c](cudaStream_t s) {
      c.dnnCheck(dnn.cudnnConvolutionForward(h, &kOne, xd, x.data, wd, w, cd, algo, ws, wsBytes, &kZero, yd, out), "cudnnConvolutionForward");
      biasActivation(out, b, c.dtype, pixels, y.c, relu, s);
    });
  }
  cur_ = y;
  blobs_.push_back(y);
}

void Net::maxPool() {
  const auto& dnn = ctx_.libs.dnn;
  const Blob x = cur_;
  const Blob y = alloc(ctx_.dtype, x.n, x.c, x.h / 2, x.w / 2);
  const cudnnDataType_t dt = dnnType(ctx_.dtype);
  cudnnTensorDescriptor_t xd, yd;
  cudnnPoolingDescriptor_t pd;
  ctx_.dnnCheck(dnn.cudnnCreateTensorDescriptor(&xd), "cudnnCreateTensorDescriptor");
  ctx_.dnnCheck(dnn.cudnnCreateTensorDescriptor(&yd), "cudnnCreateTensorDescriptor");
  ctx_.dnnCheck(dnn.cudnnCreatePoolingDescriptor(&pd), "cudnnCreatePoolingDescriptor");
  cleanup_.push_back([&dnn, xd, yd, pd] {
    dnn.cudnnDestroyTensorDescriptor(xd); dnn.cudnnDestroyTensorDescriptor(yd); dnn.cudnnDestroyPoolingDescriptor(pd);
  });
  ctx_.dnnCheck(dnn.cudnnSetTensor4dDescriptor(xd, CUDNN_TENSOR_NHWC, dt, x.n, x.c, x.h, x.w), "cudnnSetTensor4dDescriptor");
  ctx_.dnnCheck(dnn.cudnnSetTensor4dDescriptor(yd, CUDNN_TENSOR_NHWC, dt, y.n, y.c, y.h, y.w), "cudnnSetTensor4dDescriptor");
  ctx_.dnnCheck(dnn.cudnnSetPooling2dDescriptor(pd, CUDNN_POOLING_MAX, CUDNN_NOT_PROPAGATE_NAN, 2, 2, 0, 0, 2, 2), "cudnnSetPooling2dDescriptor");
  cudnnHandle_t h = ctx_.dnn;
  void* out = const_cast<void*>(y.data);
  auto pool = [=, &dnn]() { return dnn.cudnnPoolingForward(h, pd, &kOne, xd, x.data, &kZero, yd, out); };
  const Context& c = ctx_;
  if (pool() == 0) {
    steps_.push_back([pool, &c](cudaStream_t) { c.dnnCheck(pool(), "cudnnPoolingForward"); });
  } else {
    steps_.push_back([=, &c](cudaStream_t s) { maxPool2x2(x.data, out, c.dtype, x.n, x.h, x.w, x.c, s); });
  }
  cur_ = y;
  blobs_.push_back(y);
}

void Net::lrn(const FeatureOp& op) {
  const auto& dnn = ctx_.libs.dnn;
  const Blob x = cur_;
  const Blob y = alloc(ctx_.dtype, x.n, x.c, x.h, x.w);
  const cudnnDataType_t dt = dnnType(ctx_.dtype);
  cudnnTensorDescriptor_t xd;
  cudnnLRNDescriptor_t ld;
  ctx_.dnnCheck(dnn.cudnnCreateTensorDescriptor(&xd), "cudnnCreateTensorDescriptor");
  ctx_.dnnCheck(dnn.cudnnCreateLRNDescriptor(&ld), "cudnnCreateLRNDescriptor");
  cleanup_.push_back([&dnn, xd, ld] { dnn.cudnnDestroyTensorDescriptor(xd); dnn.cudnnDestroyLRNDescriptor(ld); });
  ctx_.dnnCheck(dnn.cudnnSetTensor4dDescriptor(xd, CUDNN_TENSOR_NHWC, dt, x.n, x.c, x.h, x.w), "cudnnSetTensor4dDescriptor");
  ctx_.dnnCheck(dnn.cudnnSetLRNDescriptor(ld, op.lrnSize, op.alpha, op.beta, op.k), "cudnnSetLRNDescriptor");
  cudnnHandle_t h = ctx_.dnn;
  void* out = const_cast<void*>(y.data);
  auto norm = [=, &dnn]() { return dnn.cudnnLRNCrossChannelForward(h, ld, CUDNN_LRN_CROSS_CHANNEL_DIM1, &kOne, xd, x.data, &kZero, xd, out); };
  const Context& c = ctx_;
  if (norm() == 0) {
    steps_.push_back([norm, &c](cudaStream_t) { c.dnnCheck(norm(), "cudnnLRNCrossChannelForward"); });
  } else {
    const size_t pixels = size_t(x.n) * x.h * x.w;
    steps_.push_back([=, &c](cudaStream_t s) { lrnAcrossChannels(x.data, out, c.dtype, pixels, x.c, op.lrnSize, op.alpha, op.beta, op.k, s); });
  }
  cur_ = y;
  blobs_.push_back(y);
}

// torchvision's overlapping, unequal windows; identity when pool5 is already 7x7.
static_assert(kFc6Window == 7, "kernels.cu's adaptiveAvgPool7 is written for a 7x7 window");
void Net::adaptiveAvgPool7() {
  const Blob x = cur_;
  if (x.h == kFc6Window && x.w == kFc6Window) return;
  const Blob y = alloc(ctx_.dtype, x.n, x.c, kFc6Window, kFc6Window);
  const Context& c = ctx_;
  void* out = const_cast<void*>(y.data);
  steps_.push_back([=, &c](cudaStream_t s) { vgg::cuda::adaptiveAvgPool7(x.data, out, c.dtype, x.n, x.h, x.w, x.c, s); });
  cur_ = y;  // not a blob
}

// Y[n, out] = X[n, in] W^T + b (ReLU): in cuBLASLt's column-major terms D(out x n) = W^T X.
void Net::fullyConnected(const DeviceLayer& layer, bool relu) {
  const auto& lt = ctx_.libs.lt;
  const Blob x = cur_;
  const int k = layer.kernel * layer.kernel * layer.inPadded;
  const Blob y = alloc(ctx_.dtype, x.n, layer.out, 1, 1);
  const cudaDataType_t dt = ltType(ctx_.dtype);

  cublasLtMatmulDesc_t md;
  cublasLtMatrixLayout_t a, bl, d;
  cublasLtMatmulPreference_t pref;
  ctx_.ltCheck(lt.cublasLtMatmulDescCreate(&md, CUBLAS_COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate");
  ctx_.ltCheck(lt.cublasLtMatrixLayoutCreate(&a, dt, k, layer.out, k), "cublasLtMatrixLayoutCreate(W)");
  ctx_.ltCheck(lt.cublasLtMatrixLayoutCreate(&bl, dt, k, x.n, k), "cublasLtMatrixLayoutCreate(X)");
  ctx_.ltCheck(lt.cublasLtMatrixLayoutCreate(&d, dt, layer.out, x.n, layer.out), "cublasLtMatrixLayoutCreate(Y)");
  ctx_.ltCheck(lt.cublasLtMatmulPreferenceCreate(&pref), "cublasLtMatmulPreferenceCreate");
  cleanup_.push_back([&lt, md, a, bl, d, pref] {
    lt.cublasLtMatmulDescDestroy(md); lt.cublasLtMatrixLayoutDestroy(a); lt.cublasLtMatrixLayoutDestroy(bl);
    lt.cublasLtMatrixLayoutDestroy(d); lt.cublasLtMatmulPreferenceDestroy(pref);
  });
  const cublasOperation_t transA = CUBLAS_OP_T, transB = CUBLAS_OP_N;
  const cublasLtEpilogue_t epilogue = relu ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_BIAS;
  const void* bias = layer.bias.ptr;
  ctx_.ltCheck(lt.cublasLtMatmulDescSetAttribute(md, CUBLASLT_MATMUL_DESC_TRANSA, &transA, sizeof(transA)), "TRANSA");
  ctx_.ltCheck(lt.cublasLtMatmulDescSetAttribute(md, CUBLASLT_MATMUL_DESC_TRANSB, &transB, sizeof(transB)), "TRANSB");
  ctx_.ltCheck(lt.cublasLtMatmulDescSetAttribute(md, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)), "EPILOGUE");
  ctx_.ltCheck(lt.cublasLtMatmulDescSetAttribute(md, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)), "BIAS_POINTER");
  const size_t wsBytes = ctx_.workspace.bytes;
  ctx_.ltCheck(lt.cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsBytes, sizeof(wsBytes)), "MAX_WORKSPACE_BYTES");
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  ctx_.ltCheck(lt.cublasLtMatmulAlgoGetHeuristic(ctx_.lt, md, a, bl, d, d, pref, 1, &result, &found), "cublasLtMatmulAlgoGetHeuristic");
  if (found == 0) throw std::runtime_error("cuBLASLt has no algorithm for a " + std::to_string(layer.out) + "x" + std::to_string(k) + " fc layer");

  const cublasLtMatmulAlgo_t algo = result.algo;
  cublasLtHandle_t h = ctx_.lt;
  const void* w = layer.weight.ptr;
  void* out = const_cast<void*>(y.data);
  void* ws = ctx_.workspace.ptr;
  const Context& c = ctx_;
  steps_.push_back([=, &lt, &c](cudaStream_t s) {
    c.ltCheck(lt.cublasLtMatmul(h, md, &kOne, w, a, x.data, bl, &kZero, out, d, out, d, &algo, ws, wsBytes, s), "cublasLtMatmul");
  });
  cur_ = y;
  blobs_.push_back(y);
}

void Net::meanOverSpace() {
  const Blob x = cur_;
  const Blob y = alloc(DType::F32, x.n, x.c, 1, 1);
  float* out = static_cast<float*>(const_cast<void*>(y.data));
  const Context& c = ctx_;
  steps_.push_back([=, &c](cudaStream_t s) { vgg::cuda::meanOverSpace(x.data, c.dtype, out, x.n, x.h * x.w, x.c, s); });
  cur_ = y;
  blobs_.push_back(y);
}

void Net::softmax() {
  const Blob x = cur_;
  const Blob y = alloc(DType::F32, x.n, x.c, 1, 1);
  float* out = static_cast<float*>(const_cast<void*>(y.data));
  steps_.push_back([=](cudaStream_t s) { softmaxRows(x.data, x.dtype, out, x.n, x.c, s); });
  cur_ = y;
  blobs_.push_back(y);
}

// ---- plumbing ----------------------------------------------------------------

Blob Net::alloc(DType t, int n, int c, int h, int w) {
  buffers_.emplace_back(sizeOf(t) * n * c * h * w);
  return {buffers_.back().ptr, t, n, c, h, w};
}

// Records the whole network as one CUDA graph: one launch per batch instead of one per layer.
// Where a library call cannot be captured, the steps simply run one by one.
void Net::captureGraph() {
  if (cudaStreamBeginCapture(ctx_.compute, cudaStreamCaptureModeThreadLocal) != cudaSuccess) {
    cudaGetLastError();
    return;
  }
  bool ok = true;
  try {
    for (Step& s : steps_) s(ctx_.compute);
  } catch (const std::exception&) {
    ok = false;
  }
  cudaGraph_t graph = nullptr;
  ok = cudaStreamEndCapture(ctx_.compute, &graph) == cudaSuccess && ok && graph;
  if (ok && cudaGraphInstantiate(&graph_, graph, 0) != cudaSuccess) {
    graph_ = nullptr;
  }
  if (graph) cudaGraphDestroy(graph);
  cudaGetLastError();  // a failed capture leaves a sticky-free error to clear
  if (std::getenv("VGGNET_DEBUG")) {
    std::fprintf(stderr, "vggnet: %s for a batch of %d at %dx%d (%zu steps)\n",
                 graph_ ? "CUDA graph captured" : "CUDA graph capture failed, running step by step", shape_[0], shape_[1], shape_[2], steps_.size());
  }
}

}  // namespace vgg::cuda
