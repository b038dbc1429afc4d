#include "executor.h"

#include <algorithm>
#include <stdexcept>
#include "js_plan.h"
#include "mapped_file.h"

namespace vgg {

// The first job is always the one `ready` settles: the backend is created on the thread, off
// the JS thread, because a GPU backend creates a context and uploads the weights.
struct Executor::InitJob : JobThread::Job {
  Executor* self;
  explicit InitJob(Executor* s) : self(s) {}
  void run(Job*) override { self->backend_ = makeBackend(self->plan_); }
};

struct Executor::RunJob : JobThread::Job {
  Executor* self;
  RunRequest request;
  explicit RunJob(Executor* s) : self(s) {}
  void run(Job* next) override {
    auto* queued = dynamic_cast<RunJob*>(next);
    self->backend().run(request, queued ? &queued->request : nullptr);
  }
};

struct Executor::PackJob : JobThread::Job {
  Executor* self;
  std::vector<RunRequest> shapes;  // the networks to compile
  std::vector<PackedOut> packed;   // the result
  explicit PackJob(Executor* s) : self(s) {}
  void run(Job*) override { packed = self->backend().pack(shapes); }
  Napi::Value result(Napi::Env env) override { return packedToJs(env, packed); }
};

// Frees the backend on its thread, then (on the JS thread) the pinned weights.
struct Executor::StopJob : JobThread::Job {
  Executor* self;
  explicit StopJob(Executor* s) : self(s) {}
  void run(Job*) override { self->backend_.reset(); }
  Napi::Value result(Napi::Env env) override {
    self->plan_ref_.Reset();
    return env.Undefined();
  }
};

Napi::Function Executor::Define(Napi::Env env) {
  return DefineClass(env, "Executor",
                     {InstanceMethod<&Executor::Run>("run"), InstanceMethod<&Executor::Pack>("pack"),
                      InstanceMethod<&Executor::Dispose>("dispose"),
                      InstanceAccessor<&Executor::Pending>("pending"), InstanceAccessor<&Executor::Ready>("ready")});
}

Executor::Executor(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<Executor>(info), jobs_(info.Env(), "executor", *this) {
  Napi::Object js = info[0].As<Napi::Object>();
  plan_ = readPlan(js);
  plan_ref_ = Napi::Persistent(js);
  // The thread keeps the weights' memory alive itself: at environment teardown Node may free
  // the mapped ArrayBuffer before the thread's cleanup hook stops it.
  std::vector<std::shared_ptr<Mapping>> keep;
  auto hold = [&keep](const float* p) {
    if (auto m = findMapping(p); m && std::find(keep.begin(), keep.end(), m) == keep.end()) keep.push_back(m);
  };
  for (const FeatureOp& op : plan_.features) if (op.kind == OpKind::Conv) { hold(op.weight); hold(op.bias); }
  for (const FcOp& fc : plan_.fc) { hold(fc.weight); hold(fc.bias); }
  for (const PackedWeight& p : plan_.packed) { hold(static_cast<const float*>(p.data)); hold(p.scales); }
  ready_ = Napi::Persistent(jobs_.enqueue(std::make_unique<InitJob>(this)));
  jobs_.start([this, keep = std::move(keep)] { backend_.reset(); });
}

Backend& Executor::backend() {
  if (!backend_) throw std::runtime_error("the backend failed to start");
  return *backend_;
}

// run(input, n, h, w, dense, captures: [blobIndex, Float32Array][]) -> Promise<void>
Napi::Value Executor::Run(const Napi::CallbackInfo& info) {
  auto job = std::make_unique<RunJob>(this);
  job->request = readRunRequest(info, job->pins);
  return jobs_.enqueue(std::move(job));
}

// pack(shapes: [n, h, w, dense][]) -> Promise<{ layer, layout, data, scales? }[]>
Napi::Value Executor::Pack(const Napi::CallbackInfo& info) {
  auto job = std::make_unique<PackJob>(this);
  job->shapes = readPackShapes(info[0]);
  return jobs_.enqueue(std::move(job));
}

// Finishes the queued jobs, then frees the backend and the pinned weights.
Napi::Value Executor::Dispose(const Napi::CallbackInfo&) { return jobs_.stop(std::make_unique<StopJob>(this)); }

Napi::Value Executor::Pending(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), jobs_.pending()); }

Napi::Value Executor::Ready(const Napi::CallbackInfo&) { return ready_.Value(); }

}  // namespace vgg
