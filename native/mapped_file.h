#pragma once
#include <napi.h>

namespace vgg {
// mapFile(path) -> ArrayBuffer over a private, copy-on-write mapping of the whole file.
// The pages stay shared with the page cache (and other processes) unless written to;
// the mapping is released when the ArrayBuffer is collected.
Napi::Value MapFile(const Napi::CallbackInfo& info);
}
