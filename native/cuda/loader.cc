// How cuDNN 9 finds its parts. libcudnn.so.9 is a small dispatcher: on first use it, and
// libcudnn_graph.so.9 after it, dlopen the sub-libraries (libcudnn_graph, _ops, _cnn, _adv,
// _heuristic, _engines_precompiled, _engines_runtime_compiled, and from 9.24 on
// _engines_tensor_ir and _ext) by bare name, trying "libcudnn_cnn.so.9.X.Y", ".so.9.X",
// ".so.9", ".so" in turn. A bare name is resolved by the dynamic loader: first against the
// libraries already in the process (by soname), then LD_LIBRARY_PATH, then the caller's
// RUNPATH, which NVIDIA sets to $ORIGIN in the x86_64 cuDNN 9 libraries (not in every aarch64
// build of libcudnn_graph), then ld.so.cache. So a dispatcher opened by its full path finds
// its own folder's parts on x86_64, but a different cuDNN on LD_LIBRARY_PATH wins over them
// (CUDNN_STATUS_SUBLIBRARY_VERSION_MISMATCH), and on a build without the RUNPATH none are
// found (CUDNN_STATUS_SUBLIBRARY_LOADING_FAILED). PyTorch preloads the whole set with
// RTLD_GLOBAL for this reason; we do the same: once the dispatcher is open, every part in its
// folder is opened by full path, so each later lookup by soname lands on the copy beside it.
#include "loader.h"

#include <dlfcn.h>
#include <link.h>
#include <unistd.h>

#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

namespace vgg::cuda {
namespace {

constexpr const char* kCudnn = "libcudnn.so.9";
constexpr const char* kCublasLt = "libcublasLt.so.13";  // .12 has another ABI: never taken
constexpr int kOpenFlags = RTLD_NOW | RTLD_GLOBAL;

struct SubLib {
  const char* name;
  bool required;  // the legacy convolution, pooling and LRN calls live in these
};
// Dependencies first: _ops needs _graph, _cnn needs both.
constexpr SubLib kCudnnParts[] = {
    {"libcudnn_graph.so.9", true},
    {"libcudnn_engines_precompiled.so.9", false},
    {"libcudnn_engines_runtime_compiled.so.9", false},  // needs NVRTC when it runs
    {"libcudnn_heuristic.so.9", false},
    {"libcudnn_ops.so.9", true},
    {"libcudnn_cnn.so.9", true},
    {"libcudnn_engines_tensor_ir.so.9", false},  // cuDNN 9.24+
    {"libcudnn_ext.so.9", false},                // cuDNN 9.24+
};

const char* kCudnnFix =
    "install cuDNN 9 (pip install nvidia-cudnn-cu13, or the libcudnn9 package) or set "
    "VGGNET_CUDNN_PATH to the folder that holds libcudnn.so.9";
const char* kCublasLtFix =
    "install cuBLAS 13 (pip install nvidia-cublas, or the CUDA 13 libcublas package) or set "
    "VGGNET_CUDNN_PATH to a folder that also holds libcublasLt.so.13";

std::string lastDlError() {
  const char* e = dlerror();
  return e ? e : "unknown error";
}

bool exists(const std::string& path) { return access(path.c_str(), F_OK) == 0; }

// The file the loader mapped for a handle (its full path, as it found it).
std::string pathOf(void* handle, const char* fallback) {
  link_map* map = nullptr;
  if (dlinfo(handle, RTLD_DI_LINKMAP, &map) == 0 && map && map->l_name && map->l_name[0])
    return map->l_name;
  return fallback;
}

std::string folderOf(const std::string& path) {
  const auto slash = path.rfind('/');
  return slash == std::string::npos ? "." : path.substr(0, slash);
}

// A library opened and accepted: its handle and the other handles opened with it.
struct Opened {
  void* handle = nullptr;
  std::string path;
  std::vector<void*> extra;
};

// Checks a candidate once it is open; returns "" to take it, or why not (after undoing what
// it opened itself).
using Accept = std::function<std::string(Opened&)>;

void closeAll(Opened& o) {
  for (auto it = o.extra.rbegin(); it != o.extra.rend(); ++it) dlclose(*it);
  o.extra.clear();
  if (o.handle) dlclose(o.handle);
  o.handle = nullptr;
}

// Looks for `soname`: already in the process, then in each folder, then on the loader path.
// Every place tried goes into `tried`, with the reason it was passed over.
bool openFirst(const char* soname, const std::vector<std::string>& dirs, const Accept& accept,
               Opened& out, std::vector<std::string>& tried) {
  auto attempt = [&](void* handle, const std::string& where, const char* fallbackPath) {
    out = Opened{handle, pathOf(handle, fallbackPath), {}};
    const std::string why = accept(out);
    if (why.empty()) return true;
    tried.push_back(where + ": " + why);
    closeAll(out);
    return false;
  };

  if (void* h = dlopen(soname, kOpenFlags | RTLD_NOLOAD)) {
    if (attempt(h, std::string("the ") + soname + " already loaded in this process", soname))
      return true;
  }
  std::vector<std::string> seen;
  for (const auto& dir : dirs) {
    if (dir.empty()) continue;
    std::string path = dir;
    if (path.back() != '/') path += '/';
    path += soname;
    bool dup = false;
    for (const auto& s : seen) dup = dup || s == path;
    if (dup) continue;
    seen.push_back(path);
    if (!exists(path)) {
      tried.push_back(path + ": no such file");
      continue;
    }
    void* h = dlopen(path.c_str(), kOpenFlags);
    if (!h) {
      tried.push_back(path + ": " + lastDlError());
      continue;
    }
    if (attempt(h, path, path.c_str())) return true;
  }
  const std::string onPath =
      std::string(soname) + " on the loader path (LD_LIBRARY_PATH, ld.so.cache, system folders)";
  void* h = dlopen(soname, kOpenFlags);
  if (!h) {
    tried.push_back(onPath + ": " + lastDlError());
    return false;
  }
  return attempt(h, onPath, soname);
}

// Resolves every member named in the table's list; returns the names missing.
template <class F>
void resolve(void* handle, const char* name, F& slot, std::vector<std::string>& missing) {
  dlerror();
  void* p = dlsym(handle, name);
  if (!p) {
    missing.push_back(name);
    return;
  }
  slot = reinterpret_cast<F>(p);
}

std::string joinMissing(const std::vector<std::string>& names, const std::string& file) {
  std::string s = "lacks ";
  for (size_t i = 0; i < names.size(); ++i) s += (i ? ", " : "") + names[i];
  return s + " (no such symbol in " + file + ")";
}

std::string failure(const char* what, const std::vector<std::string>& tried, const char* fix) {
  std::string s = std::string("cannot load ") + what + "; tried:";
  for (const auto& t : tried) s += "\n  " + t;
  return s + "\nfix: " + fix;
}

// A table's entries are all function pointers: its size counts them, which keeps the
// X-macro list (the names resolved and checked) and the struct's members in step.
#define VGG_COUNT(name) +1
static_assert(sizeof(DnnApi) == (0 VGG_CUDA_DNN_API(VGG_COUNT)) * sizeof(void (*)()),
              "VGG_CUDA_DNN_API must list every DnnApi member");
static_assert(sizeof(BlasLtApi) == (0 VGG_CUDA_BLASLT_API(VGG_COUNT)) * sizeof(void (*)()),
              "VGG_CUDA_BLASLT_API must list every BlasLtApi member");
#undef VGG_COUNT

std::string loadCublasLt(const std::vector<std::string>& dirs, CudaLibs& libs) {
  std::vector<std::string> tried;
  Opened lt;
  const Accept accept = [&](Opened& o) -> std::string {
    BlasLtApi api{};
    std::vector<std::string> missing;
#define VGG_RESOLVE(name) resolve(o.handle, #name, api.name, missing);
    VGG_CUDA_BLASLT_API(VGG_RESOLVE)
#undef VGG_RESOLVE
    if (!missing.empty()) return joinMissing(missing, o.path);
    const size_t version = api.cublasLtGetVersion();
    if (version / 10000 != 13)
      return "reports cuBLASLt version " + std::to_string(version) + ", not 13.x";
    libs.lt = api;
    return "";
  };
  if (!openFirst(kCublasLt, dirs, accept, lt, tried))
    return failure("cuBLASLt 13 (libcublasLt.so.13)", tried, kCublasLtFix);
  libs.cublasLtPath = lt.path;
  return "";
}

std::string loadCudnn(const std::vector<std::string>& dirs, CudaLibs& libs) {
  std::vector<std::string> tried;
  Opened dnn;
  const Accept accept = [&](Opened& o) -> std::string {
    DnnApi api{};
    std::vector<std::string> missing;
#define VGG_RESOLVE(name) resolve(o.handle, #name, api.name, missing);
    VGG_CUDA_DNN_API(VGG_RESOLVE)
#undef VGG_RESOLVE
    if (!missing.empty()) return joinMissing(missing, o.path);
    // Its parts, by full path from its own folder, before any cuDNN call looks for them by
    // name (opening the dispatcher loads none of them yet: PyTorch relies on that too).
    const std::string folder = folderOf(o.path);
    std::vector<std::string> skipped;
    for (const auto& part : kCudnnParts) {
      const std::string path = folder + "/" + part.name;
      if (!exists(path)) {
        if (part.required) return "no " + std::string(part.name) + " beside it in " + folder;
        continue;
      }
      void* h = dlopen(path.c_str(), kOpenFlags);
      if (h) {
        o.extra.push_back(h);
      } else if (part.required) {
        return path + " would not load: " + lastDlError();
      } else {
        skipped.push_back(path + ": " + lastDlError());
      }
    }
    const size_t version = api.cudnnGetVersion();
    if (version / 10000 != 9)
      return "reports cuDNN version " + std::to_string(version) + ", not 9.x";
    libs.dnn = api;
    libs.skipped = std::move(skipped);
    return "";
  };
  if (!openFirst(kCudnn, dirs, accept, dnn, tried))
    return failure("cuDNN 9 (libcudnn.so.9)", tried, kCudnnFix);
  libs.cudnnPath = dnn.path;
  return "";
}

}  // namespace

const CudaLibs& loadCudaLibs(const std::vector<std::string>& searchDirs) {
  static std::mutex mutex;
  static const CudaLibs* loaded = nullptr;  // never freed: the libraries stay loaded too
  std::lock_guard<std::mutex> lock(mutex);
  if (loaded) return *loaded;
  // A failure is not remembered: the next call may look in other folders.

  auto libs = std::make_unique<CudaLibs>();
  // cuBLASLt first, so that any cuDNN part that needs it by soname finds this one.
  const std::string ltError = loadCublasLt(searchDirs, *libs);
  const std::string dnnError = loadCudnn(searchDirs, *libs);
  if (!ltError.empty() || !dnnError.empty()) {
    std::string error = dnnError;
    if (!ltError.empty()) error += (error.empty() ? "" : "\n") + ltError;
    throw std::runtime_error(error);
  }
  loaded = libs.release();
  return *loaded;
}

}  // namespace vgg::cuda
