#include "js_plan.h"

#include <algorithm>
#include <memory>

namespace vgg {

namespace {

const float* floats(const Napi::Value& v) { return v.As<Napi::Float32Array>().Data(); }
// Weights a packed file supplies are null in the plan.
const float* optionalFloats(const Napi::Value& v) { return v.IsTypedArray() ? floats(v) : nullptr; }
int int32(const Napi::Value& v) { return v.As<Napi::Number>().Int32Value(); }
float scaleOf(const Napi::Object& op) {
  Napi::Value v = op.Get("outScale");
  return v.IsNumber() ? v.As<Napi::Number>().FloatValue() : 0.f;
}

template <std::size_t N>
std::string joined(const std::array<const char*, N>& names) {
  std::string out;
  for (const char* name : names) out += (out.empty() ? "" : ", ") + std::string(name);
  return out;
}

// A plan's list of names as a message shows it; anything but an array reads as "none".
std::string joined(const Napi::Value& names) {
  if (!names.IsArray()) return "none";
  Napi::Array a = names.As<Napi::Array>();
  std::string out;
  for (uint32_t i = 0; i < a.Length(); i++) out += (i ? ", " : "") + a.Get(i).ToString().Utf8Value();
  return out;
}

template <std::size_t N>
bool sameNames(const Napi::Value& names, const std::array<const char*, N>& expected) {
  if (!names.IsArray() || names.As<Napi::Array>().Length() != N) return false;
  Napi::Array a = names.As<Napi::Array>();
  for (uint32_t i = 0; i < N; i++) {
    Napi::Value v = a.Get(i);
    if (!v.IsString() || v.As<Napi::String>().Utf8Value() != expected[i]) return false;
  }
  return true;
}

// A plan numbered or shaped otherwise than this addon computes comes from other sources than
// it was built from: its captures would be filled with the wrong blobs, so it is refused whole.
void checkLayout(const Napi::Object& js) {
  Napi::Env env = js.Env();
  const auto refuse = [&env](const std::string& what) {
    throw Napi::Error::New(env, "vggnet's TypeScript and its native addon disagree: " + what +
                                    "; rebuild the addon from these sources (npm run build:native)");
  };
  const Napi::Value window = js.Get("fc6Window");
  if (!window.IsNumber() || window.As<Napi::Number>().DoubleValue() != kFc6Window) {
    refuse("the plan's fc6 window is " + window.ToString().Utf8Value() + " but the addon's is " +
           std::to_string(kFc6Window));
  }
  const Napi::Value heads = js.Get("headBlobs");
  const Napi::Object byHead = heads.IsObject() ? heads.As<Napi::Object>() : Napi::Object::New(env);
  const Napi::Value fixed = byHead.Get("fixed"), dense = byHead.Get("dense");
  if (!sameNames(fixed, kFixedHeadBlobs)) {
    refuse("the plan's fixed head blobs are " + joined(fixed) + " but the addon's are " + joined(kFixedHeadBlobs));
  }
  if (!sameNames(dense, kDenseHeadBlobs)) {
    refuse("the plan's dense head blobs are " + joined(dense) + " but the addon's are " + joined(kDenseHeadBlobs));
  }
}

FeatureOp readFeature(const Napi::Object& f) {
  const std::string kind = f.Get("kind").As<Napi::String>();
  FeatureOp op;
  if (kind == "conv") {
    op.kind = OpKind::Conv;
    op.kernel = int32(f.Get("kernel"));
    op.inC = int32(f.Get("inC"));
    op.outC = int32(f.Get("outC"));
    op.weight = optionalFloats(f.Get("weight"));
    op.bias = floats(f.Get("bias"));
    op.outScale = scaleOf(f);
  } else if (kind == "pool") {
    op.kind = OpKind::MaxPool;
  } else {
    op.kind = OpKind::Lrn;
    op.lrnSize = int32(f.Get("size"));
    op.alpha = f.Get("alpha").As<Napi::Number>().FloatValue();
    op.beta = f.Get("beta").As<Napi::Number>().FloatValue();
    op.k = f.Get("k").As<Napi::Number>().FloatValue();
    op.outScale = scaleOf(f);
  }
  return op;
}

PackedWeight readPacked(const Napi::Object& p) {
  Napi::Uint8Array layout = p.Get("layout").As<Napi::Uint8Array>();
  PackedWeight w;
  w.layer = int32(p.Get("layer"));
  w.layout.assign(reinterpret_cast<const char*>(layout.Data()), layout.ByteLength());
  w.data = p.Get("data").As<Napi::Uint8Array>().Data();
  w.scales = optionalFloats(p.Get("scales"));
  return w;
}

}  // namespace

Plan readPlan(const Napi::Object& js) {
  checkLayout(js);
  Plan plan;
  plan.threads = int32(js.Get("threads"));
  plan.cudaDevice = int32(js.Get("cudaDevice"));
  const std::string precision = js.Get("precision").As<Napi::String>();
  plan.precision = precision == "bf16"   ? Precision::BF16
                   : precision == "fp16" ? Precision::F16
                   : precision == "int8" ? Precision::I8
                                         : Precision::F32;
  plan.winograd = js.Get("winograd").ToBoolean();
  plan.libraryDirs = readStrings(js.Get("libraryDirs"));
  plan.lastC = int32(js.Get("lastC"));
  Napi::Array features = js.Get("features").As<Napi::Array>();
  for (uint32_t i = 0; i < features.Length(); i++) plan.features.push_back(readFeature(features.Get(i).As<Napi::Object>()));
  Napi::Array fc = js.Get("fc").As<Napi::Array>();
  for (uint32_t i = 0; i < 3; i++) {
    Napi::Object f = fc.Get(i).As<Napi::Object>();
    plan.fc[i] = {int32(f.Get("inF")), int32(f.Get("outF")), optionalFloats(f.Get("weight")), floats(f.Get("bias")), scaleOf(f)};
  }
  Napi::Value packed = js.Get("packed");
  if (packed.IsArray()) {
    Napi::Array list = packed.As<Napi::Array>();
    for (uint32_t i = 0; i < list.Length(); i++) plan.packed.push_back(readPacked(list.Get(i).As<Napi::Object>()));
  }
  return plan;
}

RunRequest readRunRequest(const Napi::CallbackInfo& info, std::vector<Napi::Reference<Napi::Value>>& pins) {
  RunRequest r;
  r.input = floats(info[0]);
  r.n = int32(info[1]);
  r.h = int32(info[2]);
  r.w = int32(info[3]);
  r.head = info[4].As<Napi::Boolean>() ? Head::Dense : Head::Fixed;
  pins.push_back(Napi::Persistent(info[0]));
  Napi::Array captures = info[5].As<Napi::Array>();
  for (uint32_t i = 0; i < captures.Length(); i++) {
    Napi::Array pair = captures.Get(i).As<Napi::Array>();
    r.captures.push_back({int32(pair.Get(0u)), pair.Get(1u).As<Napi::Float32Array>().Data()});
    pins.push_back(Napi::Persistent(pair.Get(1u)));
  }
  return r;
}

std::vector<RunRequest> readPackShapes(const Napi::Value& shapes) {
  std::vector<RunRequest> out;
  Napi::Array list = shapes.As<Napi::Array>();
  for (uint32_t i = 0; i < list.Length(); i++) {
    Napi::Array s = list.Get(i).As<Napi::Array>();
    RunRequest r;
    r.input = nullptr;
    r.n = int32(s.Get(0u));
    r.h = int32(s.Get(1u));
    r.w = int32(s.Get(2u));
    r.head = s.Get(3u).ToBoolean() ? Head::Dense : Head::Fixed;
    out.push_back(r);
  }
  return out;
}

Napi::Value packedToJs(Napi::Env env, std::vector<PackedOut>& packed) {
  Napi::Array out = Napi::Array::New(env, packed.size());
  for (size_t i = 0; i < packed.size(); i++) {
    PackedOut& p = packed[i];
    Napi::Object o = Napi::Object::New(env);
    o.Set("layer", p.layer);
    o.Set("layout", Napi::Buffer<char>::Copy(env, p.layout.data(), p.layout.size()));
    auto* owner = new std::shared_ptr<std::vector<char>>(p.data);
    const int64_t bytes = static_cast<int64_t>(p.data->size());
    Napi::MemoryManagement::AdjustExternalMemory(env, bytes);  // so that V8 collects them in time
    o.Set("data", Napi::Buffer<char>::New(env, (*owner)->data(), (*owner)->size(),
                                          [](Napi::Env env, char*, std::shared_ptr<std::vector<char>>* h) {
                                            Napi::MemoryManagement::AdjustExternalMemory(env, -static_cast<int64_t>((*h)->size()));
                                            delete h;
                                          },
                                          owner));
    if (!p.scales.empty()) {
      Napi::Float32Array scales = Napi::Float32Array::New(env, p.scales.size());
      std::copy(p.scales.begin(), p.scales.end(), scales.Data());
      o.Set("scales", scales);
    }
    out.Set(i, o);
  }
  return out;
}

std::vector<std::string> readStrings(const Napi::Value& array) {
  std::vector<std::string> out;
  Napi::Array a = array.As<Napi::Array>();
  for (uint32_t i = 0; i < a.Length(); i++) out.push_back(a.Get(i).As<Napi::String>());
  return out;
}

}  // namespace vgg
