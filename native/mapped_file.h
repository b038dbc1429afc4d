#pragma once
#include <memory>
#include <napi.h>

namespace vgg {
// mapFile(path) -> ArrayBuffer over a private, copy-on-write mapping of the whole file.
// The pages stay shared with the page cache (and other processes) unless written to;
// the mapping is released when the ArrayBuffer is collected and no executor uses it.
// As with every mmap-based loader, a file truncated or rewritten in place under a live
// mapping faults or changes what the model reads; replace weights files by rename.
Napi::Value MapFile(const Napi::CallbackInfo& info);

// The memory behind a mapFile() ArrayBuffer. The ArrayBuffer holds one reference; an executor
// that reads weights from it holds another, so the memory outlives the environment's teardown.
struct Mapping {
  void* addr;
  size_t length;
  ~Mapping();
};
// The mapping that contains p, or null.
std::shared_ptr<Mapping> findMapping(const void* p);
// Drops this process's copy of the whole pages of [p, p + bytes) when they lie in a mapFile()
// mapping, after the weights there were converted into another layout: they are clean file
// pages, so a later read faults them back from the page cache unchanged. Elsewhere, nothing.
void releaseMappedPages(const void* p, size_t bytes);
// Maps in the pages of [p, p + bytes) now, in one call, rather than one fault at a time during
// the first run (a packed file's weights, read in place). Best effort: older kernels lack it.
void prefaultPages(const void* p, size_t bytes);
}
