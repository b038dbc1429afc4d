// Memory that the kernel backs with 2 MB pages where it can (THP in "madvise" mode gives them
// only when asked): weights are streamed whole on every run (fc6 alone is 411 MB in fp32) and
// activations nearly so, and on 4 KB pages the TLB, not the bandwidth, becomes the limit.
#pragma once
#include <algorithm>
#include <cstdlib>
#include <memory>
#include <new>
#include <sys/mman.h>

namespace vgg::onednn {

using HugeBuffer = std::unique_ptr<char, void (*)(void*)>;

// 64-byte aligned (what oneDNN wants); past 2 MB, on 2 MB boundaries and advised for huge pages.
inline HugeBuffer allocateHuge(size_t bytes) {
  constexpr size_t kHuge = 2 << 20, kLine = 64;
  const size_t align = bytes >= kHuge ? kHuge : kLine;
  const size_t rounded = (std::max<size_t>(bytes, 1) + align - 1) / align * align;
  char* p = static_cast<char*>(std::aligned_alloc(align, rounded));
  if (!p) throw std::bad_alloc();
  if (align == kHuge) madvise(p, rounded, MADV_HUGEPAGE);
  return HugeBuffer(p, std::free);
}

}  // namespace vgg::onednn
