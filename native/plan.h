// The network as TypeScript validated it: plain structs, no N-API, no oneDNN.
// The backend compiles a Plan for each input shape; it trusts every field.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace vgg {

enum class OpKind { Conv, MaxPool, Lrn };

struct FeatureOp {
  OpKind kind;
  // Conv: OIHW weights and per-channel bias, both float32, owned by JS and pinned for the
  // executor's life (they may point into the memory-mapped weights file).
  int kernel = 0, inC = 0, outC = 0;
  const float* weight = nullptr;
  const float* bias = nullptr;
  // Lrn: PyTorch/Caffe convention (alpha is divided by size).
  int lrnSize = 0;
  float alpha = 0, beta = 0, k = 0;
  // int8 only: the calibrated scale of this layer's output (255 / its largest value).
  float outScale = 0;
};

struct FcOp {
  int inF = 0, outF = 0;
  const float* weight = nullptr;  // [outF, inF] row-major; fc6's inF is C*kFc6Window^2 in CHW order
  const float* bias = nullptr;
  float outScale = 0;  // int8, fc6 and fc7: as FeatureOp::outScale
};

// Weights a packed file holds already in a primitive's layout (vgg pack): `layer` is the
// conv's index among the convolutions, then fc6, fc7, fc8; `layout` is the oneDNN memory
// descriptor's bytes, checked by TypeScript to come from this oneDNN version and ISA.
struct PackedWeight {
  int layer = 0;
  std::string layout;
  const void* data = nullptr;
  const float* scales = nullptr;  // int8: the per-output-channel weight scales it was quantized with
};

// The arithmetic the backend uses; blobs handed back are float32 whatever it is.
enum class Precision { F32, BF16, F16, I8 };

struct Plan {
  int threads = 1;
  // -1 for the CPU (oneDNN), otherwise the CUDA device index.
  int cudaDevice = -1;
  Precision precision = Precision::F32;
  bool winograd = false;  // CPU fp32: Winograd for the 3x3 convolutions
  std::vector<std::string> libraryDirs;  // where to look for cuDNN and cuBLASLt
  std::vector<FeatureOp> features;
  FcOp fc[3];         // fc6, fc7, fc8
  int lastC = 0;      // channels of pool5
  std::vector<PackedWeight> packed;  // a packed file's weights; conv/fc weight pointers are null then
};

// What vgg pack writes: one layer's weights as a primitive wants them, copied out of the backend.
struct PackedOut {
  int layer;
  std::string layout;
  std::shared_ptr<std::vector<char>> data;
  std::vector<float> scales;
};

enum class Head { Fixed, Dense };

// What the backends compute, which TypeScript declares (lib/arch/topology.ts: HEAD_BLOBS,
// FC6_WINDOW) and sends with every plan: readPlan (js_plan.cc) refuses a plan that disagrees.
// Blob indices: 0..features.size()-1 are the feature layers' outputs, then the head's blobs
// in this order.
inline constexpr std::array<const char*, 4> kFixedHeadBlobs = {"fc6", "fc7", "fc8", "prob"};
inline constexpr std::array<const char*, 5> kDenseHeadBlobs = {"fc6", "fc7", "fc8_map", "fc8", "prob"};
inline constexpr std::size_t headBlobCount(Head head) {
  return head == Head::Fixed ? kFixedHeadBlobs.size() : kDenseHeadBlobs.size();
}
// The fixed head pools pool5 to this size; the dense head's fc6 is a conv of this kernel.
inline constexpr int kFc6Window = 7;

struct Capture {
  int blob;
  float* out;  // NCHW (or NC) float32, sized by TypeScript's shape inference
};

struct RunRequest {
  const float* input;  // NCHW float32
  int n, h, w;
  Head head;
  std::vector<Capture> captures;
};

}  // namespace vgg
