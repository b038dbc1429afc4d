{
  "targets": [{
    "target_name": "vggnet",
    "sources": [
      "native/addon.cc",
      "native/backend.cc",
      "native/executor.cc",
      "native/job_thread.cc",
      "native/js_plan.cc",
      "native/mapped_file.cc",
      "native/onednn/backend.cc",
      "native/onednn/net.cc",
      "native/onednn/weight_cache.cc",
      "native/train/fc_stack.cc",
      "native/train/trainer.cc"
    ],
    "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
    "defines": ["VGG_WITH_ONEDNN", "NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS", "NODE_ADDON_API_DISABLE_DEPRECATED"],
    "cflags!": ["-fno-exceptions"],
    "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
    "cflags_cc": ["-std=c++17", "-fexceptions", "-fopenmp", "-O2"],
    "libraries": ["-ldnnl", "-fopenmp"],
    "ldflags": ["-Wl,--disable-new-dtags", "-Wl,-rpath,'$$ORIGIN'"]
  }]
}
