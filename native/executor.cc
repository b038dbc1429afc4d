#include "executor.h"

#include <algorithm>
#include <stdexcept>
#include "backend.h"
#include "js_plan.h"
#include "mapped_file.h"

namespace vgg {

Napi::Function Executor::Define(Napi::Env env) {
  return DefineClass(env, "Executor",
                     {InstanceMethod<&Executor::Run>("run"), InstanceMethod<&Executor::Pack>("pack"),
                      InstanceMethod<&Executor::Dispose>("dispose"),
                      InstanceAccessor<&Executor::Pending>("pending"), InstanceAccessor<&Executor::Ready>("ready")});
}

Executor::Executor(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Executor>(info) {
  Napi::Env env = info.Env();
  Napi::Object js = info[0].As<Napi::Object>();
  plan_ = readPlan(js);
  plan_ref_ = Napi::Persistent(js);
  completion_ = Completion::New(env, "vggnet.executor", 0, 1, this);
  completion_.Unref(env);  // an idle model must not keep the process alive
  // The thread keeps the weights' memory alive itself: at environment teardown Node may free
  // the mapped ArrayBuffer before this executor's cleanup hook stops the thread.
  std::vector<std::shared_ptr<Mapping>> keep;
  auto hold = [&keep](const float* p) {
    if (auto m = findMapping(p); m && std::find(keep.begin(), keep.end(), m) == keep.end()) keep.push_back(m);
  };
  for (const FeatureOp& op : plan_.features) if (op.kind == OpKind::Conv) { hold(op.weight); hold(op.bias); }
  for (const FcOp& fc : plan_.fc) { hold(fc.weight); hold(fc.bias); }
  for (const PackedWeight& p : plan_.packed) { hold(static_cast<const float*>(p.data)); hold(p.scales); }
  auto* init = new Job{JobKind::Init, {}, {}, Napi::Promise::Deferred::New(env), {}};
  ready_ = Napi::Persistent(init->deferred.Promise());
  enqueue(init);
  thread_ = std::thread([this, keep = std::move(keep)] { loop(); });
  napi_add_env_cleanup_hook(env, onEnvCleanup, this);
}

Executor::~Executor() {
  napi_remove_env_cleanup_hook(Env(), onEnvCleanup, this);
  stopAndJoin();
}

void Executor::onEnvCleanup(void* self) { static_cast<Executor*>(self)->stopAndJoin(); }

// run(input, n, h, w, dense, captures: [blobIndex, Float32Array][]) -> Promise<void>
Napi::Value Executor::Run(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (disposing_) throw Napi::Error::New(env, "executor is disposed");
  auto* job = new Job{JobKind::Run, {}, {}, Napi::Promise::Deferred::New(env), {}};
  job->request = readRunRequest(info, job->pins);
  Napi::Promise promise = job->deferred.Promise();
  enqueue(job);
  return promise;
}

// pack(shapes: [n, h, w, dense][]) -> Promise<{ layer, layout, data, scales? }[]>
Napi::Value Executor::Pack(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (disposing_) throw Napi::Error::New(env, "executor is disposed");
  auto* job = new Job{JobKind::Pack, {}, {}, Napi::Promise::Deferred::New(env), {}};
  job->shapes = readPackShapes(info[0]);
  Napi::Promise promise = job->deferred.Promise();
  enqueue(job);
  return promise;
}

// Finishes the queued jobs, then frees the backend and the pinned weights.
Napi::Value Executor::Dispose(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto* job = new Job{JobKind::Stop, {}, {}, Napi::Promise::Deferred::New(env), {}};
  Napi::Promise promise = job->deferred.Promise();
  if (disposing_) {
    job->deferred.Resolve(env.Undefined());
    delete job;
  } else {
    disposing_ = true;
    enqueue(job);
  }
  return promise;
}

Napi::Value Executor::Pending(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), pending_); }

Napi::Value Executor::Ready(const Napi::CallbackInfo&) { return ready_.Value(); }

void Executor::enqueue(Job* job) {
  if (pending_++ == 0) {
    completion_.Ref(Env());
    Ref();  // the JS object must outlive its jobs
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    queue_.push_back(job);
  }
  wake_.notify_one();
}

// The first job is always the one `ready` settles: the backend is created here, off the JS
// thread, because a GPU backend creates a context and uploads the weights.
void Executor::loop() {
  std::unique_ptr<Backend> backend;
  for (;;) {
    Job* job;
    const RunRequest* next = nullptr;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [this] { return !queue_.empty(); });
      job = queue_.front();
      queue_.pop_front();
      // Queued jobs stay put until this thread pops them, so the pointer outlives the run.
      if (!queue_.empty() && queue_.front() && queue_.front()->kind == JobKind::Run) next = &queue_.front()->request;
    }
    if (job == nullptr) return;  // silent stop: the JS side is already gone
    try {
      switch (job->kind) {
        case JobKind::Init: backend = makeBackend(plan_); break;
        case JobKind::Run:
          if (!backend) throw std::runtime_error("the backend failed to start");
          backend->run(job->request, next);
          break;
        case JobKind::Pack:
          if (!backend) throw std::runtime_error("the backend failed to start");
          job->packed = backend->pack(job->shapes);
          break;
        case JobKind::Stop: backend.reset(); break;
      }
    } catch (const std::exception& e) {
      job->error = e.what();
    }
    const bool stop = job->kind == JobKind::Stop;  // once handed over, the job belongs to the JS thread
    completion_.NonBlockingCall(job);
    if (stop) return;
  }
}

void Executor::Complete(Napi::Env env, Napi::Function, Executor* self, Job* job) {
  std::unique_ptr<Job> owned(job);
  if (env == nullptr) return;  // the environment is shutting down
  if (job->kind == JobKind::Stop && self->thread_.joinable()) self->thread_.join();
  try {
    if (!job->error.empty()) job->deferred.Reject(Napi::Error::New(env, job->error).Value());
    else if (job->kind == JobKind::Pack) job->deferred.Resolve(packedToJs(env, job->packed));
    else job->deferred.Resolve(env.Undefined());
  } catch (const Napi::Error&) {
    // The environment is terminating (worker.terminate()): nobody is left to settle.
  }
  if (--self->pending_ == 0) {
    self->completion_.Unref(env);
    self->Unref();
  }
  if (job->kind == JobKind::Stop) {
    self->plan_ref_.Reset();
    self->completion_.Release();
  }
}

// For a model collected or an environment torn down without dispose(): the thread is idle
// (a pending job holds a reference to the object), so a silent stop returns at once.
void Executor::stopAndJoin() {
  if (!thread_.joinable()) return;
  std::deque<Job*> dropped;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    dropped.swap(queue_);     // queued jobs never run: their environment is going away
    queue_.push_back(nullptr);
  }
  wake_.notify_one();
  thread_.join();
  for (Job* job : dropped) delete job;
  if (!disposing_) completion_.Release();  // a finished dispose() released it already
}

}  // namespace vgg
