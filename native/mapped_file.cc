#include "mapped_file.h"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <string>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace vgg {

namespace {
struct Mapping {
  void* addr;
  size_t length;
};
}  // namespace

Napi::Value MapFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string path = info[0].As<Napi::String>();
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Napi::Error::New(env, std::string("cannot open: ") + strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0 || st.st_size <= 0) {
    const int err = errno;
    close(fd);
    throw Napi::Error::New(env, st.st_size <= 0 ? "file is empty" : std::string("cannot stat: ") + strerror(err));
  }
  const size_t length = static_cast<size_t>(st.st_size);
  // Writable but private: a stray write copies one page instead of crashing the process.
  void* addr = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  const int err = errno;
  close(fd);
  if (addr == MAP_FAILED) throw Napi::Error::New(env, std::string("cannot map: ") + strerror(err));
  madvise(addr, length, MADV_WILLNEED);

  auto* mapping = new Mapping{addr, length};
  Napi::MemoryManagement::AdjustExternalMemory(env, static_cast<int64_t>(length));
  return Napi::ArrayBuffer::New(
      env, addr, length,
      [](Napi::Env env, void*, Mapping* m) {
        munmap(m->addr, m->length);
        Napi::MemoryManagement::AdjustExternalMemory(env, -static_cast<int64_t>(m->length));
        delete m;
      },
      mapping);
}

}  // namespace vgg
