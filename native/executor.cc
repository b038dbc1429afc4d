#include "executor.h"

#include <algorithm>
#include "mapped_file.h"
#include <stdexcept>
#include "backend.h"

namespace vgg {

namespace {

const float* floats(const Napi::Value& v) { return v.As<Napi::Float32Array>().Data(); }
// Weights a packed file supplies are null in the plan.
const float* optionalFloats(const Napi::Value& v) { return v.IsTypedArray() ? floats(v) : nullptr; }
float scaleOf(const Napi::Object& op) {
  Napi::Value v = op.Get("outScale");
  return v.IsNumber() ? v.As<Napi::Number>().FloatValue() : 0.f;
}

// The plan as TypeScript built and validated it (lib/native.ts); nothing here re-checks it.
Plan readPlan(const Napi::Object& js) {
  Plan plan;
  plan.threads = js.Get("threads").As<Napi::Number>().Int32Value();
  plan.cudaDevice = js.Get("cudaDevice").As<Napi::Number>().Int32Value();
  const std::string precision = js.Get("precision").As<Napi::String>();
  plan.precision = precision == "bf16"   ? Precision::BF16
                   : precision == "fp16" ? Precision::F16
                   : precision == "int8" ? Precision::I8
                                         : Precision::F32;
  plan.winograd = js.Get("winograd").ToBoolean();
  Napi::Array dirs = js.Get("libraryDirs").As<Napi::Array>();
  for (uint32_t i = 0; i < dirs.Length(); i++) plan.libraryDirs.push_back(dirs.Get(i).As<Napi::String>());
  plan.lastC = js.Get("lastC").As<Napi::Number>().Int32Value();
  Napi::Array features = js.Get("features").As<Napi::Array>();
  for (uint32_t i = 0; i < features.Length(); i++) {
    Napi::Object f = features.Get(i).As<Napi::Object>();
    const std::string kind = f.Get("kind").As<Napi::String>();
    FeatureOp op;
    if (kind == "conv") {
      op.kind = OpKind::Conv;
      op.kernel = f.Get("kernel").As<Napi::Number>().Int32Value();
      op.inC = f.Get("inC").As<Napi::Number>().Int32Value();
      op.outC = f.Get("outC").As<Napi::Number>().Int32Value();
      op.weight = optionalFloats(f.Get("weight"));
      op.bias = floats(f.Get("bias"));
      op.outScale = scaleOf(f);
    } else if (kind == "pool") {
      op.kind = OpKind::MaxPool;
    } else {
      op.kind = OpKind::Lrn;
      op.lrnSize = f.Get("size").As<Napi::Number>().Int32Value();
      op.alpha = f.Get("alpha").As<Napi::Number>().FloatValue();
      op.beta = f.Get("beta").As<Napi::Number>().FloatValue();
      op.k = f.Get("k").As<Napi::Number>().FloatValue();
      op.outScale = scaleOf(f);
    }
    plan.features.push_back(op);
  }
  Napi::Array fc = js.Get("fc").As<Napi::Array>();
  for (uint32_t i = 0; i < 3; i++) {
    Napi::Object f = fc.Get(i).As<Napi::Object>();
    plan.fc[i] = {f.Get("inF").As<Napi::Number>().Int32Value(), f.Get("outF").As<Napi::Number>().Int32Value(),
                  optionalFloats(f.Get("weight")), floats(f.Get("bias")), scaleOf(f)};
  }
  Napi::Value packed = js.Get("packed");
  if (packed.IsArray()) {
    Napi::Array list = packed.As<Napi::Array>();
    for (uint32_t i = 0; i < list.Length(); i++) {
      Napi::Object p = list.Get(i).As<Napi::Object>();
      Napi::Uint8Array layout = p.Get("layout").As<Napi::Uint8Array>();
      PackedWeight w;
      w.layer = p.Get("layer").As<Napi::Number>().Int32Value();
      w.layout.assign(reinterpret_cast<const char*>(layout.Data()), layout.ByteLength());
      w.data = p.Get("data").As<Napi::Uint8Array>().Data();
      w.scales = optionalFloats(p.Get("scales"));
      plan.packed.push_back(std::move(w));
    }
  }
  return plan;
}

// The packed layers as JS objects; each data buffer is handed over without a copy.
Napi::Value packedToJs(Napi::Env env, std::vector<PackedOut>& packed) {
  Napi::Array out = Napi::Array::New(env, packed.size());
  for (size_t i = 0; i < packed.size(); i++) {
    PackedOut& p = packed[i];
    Napi::Object o = Napi::Object::New(env);
    o.Set("layer", p.layer);
    o.Set("layout", Napi::Buffer<char>::Copy(env, p.layout.data(), p.layout.size()));
    auto* owner = new std::shared_ptr<std::vector<char>>(p.data);
    const int64_t bytes = static_cast<int64_t>(p.data->size());
    Napi::MemoryManagement::AdjustExternalMemory(env, bytes);  // so that V8 collects them in time
    o.Set("data", Napi::Buffer<char>::New(env, (*owner)->data(), (*owner)->size(),
                                          [](Napi::Env env, char*, std::shared_ptr<std::vector<char>>* h) {
                                            Napi::MemoryManagement::AdjustExternalMemory(env, -static_cast<int64_t>((*h)->size()));
                                            delete h;
                                          },
                                          owner));
    if (!p.scales.empty()) {
      Napi::Float32Array scales = Napi::Float32Array::New(env, p.scales.size());
      std::copy(p.scales.begin(), p.scales.end(), scales.Data());
      o.Set("scales", scales);
    }
    out.Set(i, o);
  }
  return out;
}

}  // namespace

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
  RunRequest& r = job->request;
  r.input = floats(info[0]);
  r.n = info[1].As<Napi::Number>().Int32Value();
  r.h = info[2].As<Napi::Number>().Int32Value();
  r.w = info[3].As<Napi::Number>().Int32Value();
  r.head = info[4].As<Napi::Boolean>() ? Head::Dense : Head::Fixed;
  job->pins.push_back(Napi::Persistent(info[0]));
  Napi::Array captures = info[5].As<Napi::Array>();
  for (uint32_t i = 0; i < captures.Length(); i++) {
    Napi::Array pair = captures.Get(i).As<Napi::Array>();
    r.captures.push_back({pair.Get(0u).As<Napi::Number>().Int32Value(),
                          pair.Get(1u).As<Napi::Float32Array>().Data()});
    job->pins.push_back(Napi::Persistent(pair.Get(1u)));
  }
  Napi::Promise promise = job->deferred.Promise();
  enqueue(job);
  return promise;
}

// pack(shapes: [n, h, w, dense][]) -> Promise<{ layer, layout, data, scales? }[]>
Napi::Value Executor::Pack(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (disposing_) throw Napi::Error::New(env, "executor is disposed");
  auto* job = new Job{JobKind::Pack, {}, {}, Napi::Promise::Deferred::New(env), {}};
  Napi::Array shapes = info[0].As<Napi::Array>();
  for (uint32_t i = 0; i < shapes.Length(); i++) {
    Napi::Array s = shapes.Get(i).As<Napi::Array>();
    RunRequest r;
    r.input = nullptr;
    r.n = s.Get(0u).As<Napi::Number>().Int32Value();
    r.h = s.Get(1u).As<Napi::Number>().Int32Value();
    r.w = s.Get(2u).As<Napi::Number>().Int32Value();
    r.head = s.Get(3u).ToBoolean() ? Head::Dense : Head::Fixed;
    job->shapes.push_back(r);
  }
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
