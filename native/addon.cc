// The addon's surface: mapFile, the Executor class and the backend's versions.
// TypeScript (lib/native.ts) validates everything before it reaches these functions.
#include <napi.h>
#include "executor.h"
#include "mapped_file.h"
#include "onednn/backend.h"

namespace {

Napi::Value Versions(const Napi::CallbackInfo& info) {
  Napi::Object out = Napi::Object::New(info.Env());
  out.Set("onednn", vgg::onednn::versionString());
  out.Set("isa", vgg::onednn::isaName());
  return out;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("mapFile", Napi::Function::New(env, vgg::MapFile, "mapFile"));
  exports.Set("versions", Napi::Function::New(env, Versions, "versions"));
  exports.Set("Executor", vgg::Executor::Define(env));
  return exports;
}

}  // namespace

NODE_API_MODULE(vggnet, Init)
