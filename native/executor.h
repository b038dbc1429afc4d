// One executor per model: a native thread that owns the backend and runs queued jobs in
// order, so inference never touches the JS thread and concurrent calls never race.
// Completions come back through a thread-safe function and settle the caller's Promise.
#pragma once
#include <condition_variable>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>
#include <napi.h>
#include "plan.h"

namespace vgg {

class Executor : public Napi::ObjectWrap<Executor> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit Executor(const Napi::CallbackInfo& info);
  ~Executor() override;

 private:
  // The baton: everything a job needs, with its JS inputs pinned until it completes.
  enum class JobKind { Init, Run, Pack, Stop };
  struct Job {
    JobKind kind;
    RunRequest request;
    std::string error;
    Napi::Promise::Deferred deferred;
    std::vector<Napi::Reference<Napi::Value>> pins;
    std::vector<RunRequest> shapes = {};  // Pack: the networks to compile
    std::vector<PackedOut> packed = {};   // Pack: the result
  };
  static void Complete(Napi::Env env, Napi::Function, Executor* self, Job* job);
  using Completion = Napi::TypedThreadSafeFunction<Executor, Job, Complete>;

  Napi::Value Run(const Napi::CallbackInfo& info);
  Napi::Value Pack(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value Pending(const Napi::CallbackInfo& info);
  Napi::Value Ready(const Napi::CallbackInfo& info);

  void enqueue(Job* job);
  void loop();
  void stopAndJoin();
  static void onEnvCleanup(void* self);

  Plan plan_;
  Napi::ObjectReference plan_ref_;  // keeps the weight arrays (and the mapped file) alive
  Napi::Reference<Napi::Promise> ready_;  // settles once the backend has started
  Completion completion_;
  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Job*> queue_;
  int pending_ = 0;   // jobs queued or running, counted on the JS thread
  bool disposing_ = false;
};

}  // namespace vgg
