// One executor per model: a JobThread that owns the backend and runs inference jobs in order,
// so inference never touches the JS thread and concurrent calls never race.
#pragma once
#include <memory>
#include <napi.h>
#include "backend.h"
#include "job_thread.h"
#include "plan.h"

namespace vgg {

class Executor : public Napi::ObjectWrap<Executor> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit Executor(const Napi::CallbackInfo& info);

 private:
  struct InitJob;
  struct RunJob;
  struct PackJob;
  struct StopJob;

  Napi::Value Run(const Napi::CallbackInfo& info);
  Napi::Value Pack(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value Pending(const Napi::CallbackInfo& info);
  Napi::Value Ready(const Napi::CallbackInfo& info);

  Backend& backend();  // on the executor's thread

  Plan plan_;
  Napi::ObjectReference plan_ref_;  // keeps the weight arrays (and the mapped file) alive
  Napi::Reference<Napi::Promise> ready_;  // settles once the backend has started
  std::unique_ptr<Backend> backend_;  // created, used and freed on the thread only
  JobThread jobs_;  // last: its thread stops before the members above go
};

}  // namespace vgg
