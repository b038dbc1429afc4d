#include "mapped_file.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <mutex>
#include <string>
#include <vector>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace vgg {

namespace {
std::mutex registry_mutex;
std::vector<std::weak_ptr<Mapping>> registry;
}  // namespace

Mapping::~Mapping() { munmap(addr, length); }

std::shared_ptr<Mapping> findMapping(const void* p) {
  std::lock_guard<std::mutex> lock(registry_mutex);
  for (auto& w : registry) {
    if (auto m = w.lock()) {
      const char* base = static_cast<const char*>(m->addr);
      if (p >= base && p < base + m->length) return m;
    }
  }
  return nullptr;
}

void releaseMappedPages(const void* p, size_t bytes) {
  if (!findMapping(p)) return;  // JS-heap memory (widened or folded weights) must not be touched
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(p) + page - 1) / page * page;
  const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + bytes) / page * page;
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);
}

void prefaultPages(const void* p, size_t bytes) {
#ifdef MADV_POPULATE_READ
  const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const uintptr_t begin = reinterpret_cast<uintptr_t>(p) / page * page;
  madvise(reinterpret_cast<void*>(begin), reinterpret_cast<uintptr_t>(p) + bytes - begin, MADV_POPULATE_READ);
#else
  (void)p;
  (void)bytes;
#endif
}

Napi::Value MapFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string path = info[0].As<Napi::String>();
  // Non-blocking: a path swapped for a FIFO after TypeScript's stat must not hang the JS thread.
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) throw Napi::Error::New(env, std::string("cannot open: ") + strerror(errno));
  struct stat st;
  const bool statted = fstat(fd, &st) == 0;
  const int err = errno;
  if (!statted || !S_ISREG(st.st_mode) || st.st_size <= 0) {
    close(fd);
    throw Napi::Error::New(env, !statted ? std::string("cannot stat: ") + strerror(err)
                                : !S_ISREG(st.st_mode) ? "not a regular file" : "file is empty");
  }
  const size_t length = static_cast<size_t>(st.st_size);
  // Writable but private: a stray write copies one page instead of crashing the process.
  // The file itself must not be rewritten in place while mapped (replace it by rename).
  void* addr = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  const int mapErr = errno;
  close(fd);
  if (addr == MAP_FAILED) throw Napi::Error::New(env, std::string("cannot map: ") + strerror(mapErr));
  madvise(addr, length, MADV_WILLNEED);

  std::shared_ptr<Mapping> shared(new Mapping{addr, length});
  {
    std::lock_guard<std::mutex> lock(registry_mutex);
    registry.erase(std::remove_if(registry.begin(), registry.end(), [](auto& w) { return w.expired(); }), registry.end());
    registry.push_back(shared);
  }
  auto* mapping = new std::shared_ptr<Mapping>(std::move(shared));
  Napi::MemoryManagement::AdjustExternalMemory(env, static_cast<int64_t>(length));
  return Napi::ArrayBuffer::New(
      env, addr, length,
      [](Napi::Env env, void*, std::shared_ptr<Mapping>* m) {
        Napi::MemoryManagement::AdjustExternalMemory(env, -static_cast<int64_t>((*m)->length));
        delete m;  // unmapped when the last executor reading it is done too
      },
      mapping);
}

}  // namespace vgg
