// The Trainer class the addon exports: an FcStack on its own JobThread (the executor's
// machinery), so training steps run off the event loop, one at a time, in call order.
#pragma once
#include <memory>
#include <napi.h>
#include "../job_thread.h"
#include "fc_stack.h"

namespace vgg::train {

class Trainer : public Napi::ObjectWrap<Trainer> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit Trainer(const Napi::CallbackInfo& info);

 private:
  struct InitJob;
  struct StepJob;
  struct PredictJob;
  struct WeightsJob;
  struct MasksJob;
  struct StopJob;

  Napi::Value Step(const Napi::CallbackInfo& info);
  Napi::Value Predict(const Napi::CallbackInfo& info);
  Napi::Value Weights(const Napi::CallbackInfo& info);
  Napi::Value Masks(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value Pending(const Napi::CallbackInfo& info);
  Napi::Value Ready(const Napi::CallbackInfo& info);

  FcStack& stack();  // on the trainer's thread

  Napi::Reference<Napi::Promise> ready_;  // settles once the weights are copied in
  std::unique_ptr<FcStack> stack_;  // created, used and freed on the thread only
  JobThread jobs_;  // last: its thread stops before the members above go
};

}  // namespace vgg::train
