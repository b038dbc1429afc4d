// The addon's surface: mapFile, the Executor and Trainer classes and the backend's versions.
// TypeScript validates everything before it reaches these functions; lib/native.ts declares them.
#include <napi.h>
#include "executor.h"
#include "js_plan.h"
#include "mapped_file.h"
#ifdef VGG_WITH_ONEDNN
#include "onednn/backend.h"
#include "train/trainer.h"
#endif
#ifdef VGG_WITH_CUDA
#include "cuda/backend.h"
#include "cuda/probe.h"
#endif

namespace {

// What this build has: a backend missing here is null.
Napi::Value Versions(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
#ifdef VGG_WITH_ONEDNN
  out.Set("onednn", vgg::onednn::versionString());
  out.Set("isa", vgg::onednn::isaName());
#else
  out.Set("onednn", env.Null());
  out.Set("isa", env.Null());
#endif
#ifdef VGG_WITH_CUDA
  out.Set("cuda", vgg::cuda::runtimeVersionString());
#else
  out.Set("cuda", env.Null());
#endif
  return out;
}

// cudaProbe(libraryDirs): what vggnet's CUDA backend would find here (null without one).
Napi::Value CudaProbe(const Napi::CallbackInfo& info) {
#ifdef VGG_WITH_CUDA
  return vgg::cuda::probe(info.Env(), vgg::readStrings(info[0]));
#else
  return info.Env().Null();
#endif
}

// describeLayout(bytes): { dims, dataType, bytes } of a packed layout; throws if it is not one.
Napi::Value DescribeLayout(const Napi::CallbackInfo& info) {
#ifdef VGG_WITH_ONEDNN
  Napi::Env env = info.Env();
  Napi::Uint8Array bytes = info[0].As<Napi::Uint8Array>();
  const vgg::onednn::LayoutInfo l = vgg::onednn::describeLayout(bytes.Data(), bytes.ByteLength());
  if (!l.error.empty()) throw Napi::Error::New(env, l.error);
  Napi::Object out = Napi::Object::New(env);
  Napi::Array dims = Napi::Array::New(env, l.dims.size());
  for (size_t i = 0; i < l.dims.size(); i++) dims.Set(i, static_cast<double>(l.dims[i]));
  out.Set("dims", dims);
  out.Set("dataType", l.dataType);
  out.Set("kind", l.kind);
  out.Set("bytes", static_cast<double>(l.bytes));
  return out;
#else
  return info.Env().Null();
#endif
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("cudaProbe", Napi::Function::New(env, CudaProbe, "cudaProbe"));
  exports.Set("describeLayout", Napi::Function::New(env, DescribeLayout, "describeLayout"));
  exports.Set("mapFile", Napi::Function::New(env, vgg::MapFile, "mapFile"));
  exports.Set("versions", Napi::Function::New(env, Versions, "versions"));
  exports.Set("Executor", vgg::Executor::Define(env));
#ifdef VGG_WITH_ONEDNN
  exports.Set("Trainer", vgg::train::Trainer::Define(env));
#endif
  return exports;
}

}  // namespace

NODE_API_MODULE(vggnet, Init)
