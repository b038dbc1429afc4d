// The JS <-> C++ conversion at the addon's boundary: the plan, run and pack arguments as
// lib/native.ts declares them (lib/engine/ builds and checks them), read into
// plan.h's structs, and pack's result handed back. Nothing here re-checks what TypeScript
// checked, except that the plan's blob numbering and fc6 window are the ones this addon
// computes.
#pragma once
#include <string>
#include <vector>
#include <napi.h>
#include "plan.h"

namespace vgg {

// Throws a Napi::Error when the plan's head blobs or fc6 window differ from plan.h's.
Plan readPlan(const Napi::Object& js);

// run(input, n, h, w, dense, captures)'s arguments; every JS array they point into is
// appended to `pins`, to be kept alive until the run completes.
RunRequest readRunRequest(const Napi::CallbackInfo& info, std::vector<Napi::Reference<Napi::Value>>& pins);

// pack(shapes)'s argument: one input-less request per [n, h, w, dense].
std::vector<RunRequest> readPackShapes(const Napi::Value& shapes);

// The packed layers as JS objects; each data buffer is handed over without a copy.
Napi::Value packedToJs(Napi::Env env, std::vector<PackedOut>& packed);

std::vector<std::string> readStrings(const Napi::Value& array);

}  // namespace vgg
