#include "job_thread.h"

namespace vgg {

JobThread::JobThread(Napi::Env env, const std::string& name, Napi::Reference<Napi::Object>& owner)
    : env_(env), name_(name), owner_(owner), completion_(Completion::New(env, "vggnet." + name, 0, 1, this)) {
  completion_.Unref(env);  // an idle model or trainer must not keep the process alive
  napi_add_env_cleanup_hook(env, onEnvCleanup, this);
}

JobThread::~JobThread() {
  napi_remove_env_cleanup_hook(env_, onEnvCleanup, this);
  stopAndJoin();
}

void JobThread::onEnvCleanup(void* self) { static_cast<JobThread*>(self)->stopAndJoin(); }

void JobThread::start(std::function<void()> atEnd) {
  started_ = true;
  thread_ = std::thread([this, atEnd = std::move(atEnd)] {
    loop();
    atEnd();
  });
}

Napi::Promise JobThread::enqueue(std::unique_ptr<Job> job) {
  if (disposing_) throw Napi::Error::New(env_, name_ + " is disposed");
  job->deferred.emplace(Napi::Promise::Deferred::New(env_));
  Napi::Promise promise = job->deferred->Promise();
  if (pending_++ == 0) {
    completion_.Ref(env_);
    owner_.Ref();  // the JS object must outlive its jobs
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    queue_.push_back(job.release());
  }
  wake_.notify_one();
  return promise;
}

Napi::Promise JobThread::stop(std::unique_ptr<Job> last) {
  if (disposing_) {
    auto done = Napi::Promise::Deferred::New(env_);
    done.Resolve(env_.Undefined());
    return done.Promise();
  }
  last->stops = true;
  Napi::Promise promise = enqueue(std::move(last));
  disposing_ = true;
  return promise;
}

void JobThread::loop() {
  for (;;) {
    Job* job;
    Job* next = nullptr;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [this] { return !queue_.empty(); });
      job = queue_.front();
      queue_.pop_front();
      if (!queue_.empty()) next = queue_.front();
    }
    if (job == nullptr) return;  // silent stop: the JS side is already gone
    try {
      job->run(next);
    } catch (const std::exception& e) {
      job->error = e.what();
    }
    const bool stops = job->stops;  // once handed over, the job belongs to the JS thread
    completion_.NonBlockingCall(job);
    if (stops) return;
  }
}

void JobThread::Complete(Napi::Env env, Napi::Function, JobThread* self, Job* job) {
  std::unique_ptr<Job> owned(job);
  if (env == nullptr) return;  // the environment is shutting down
  if (job->stops && self->thread_.joinable()) self->thread_.join();
  try {
    if (!job->error.empty()) job->deferred->Reject(Napi::Error::New(env, job->error).Value());
    else job->deferred->Resolve(job->result(env));
  } catch (const Napi::Error&) {
    // The environment is terminating (worker.terminate()): nobody is left to settle.
  }
  if (--self->pending_ == 0) {
    self->completion_.Unref(env);
    self->owner_.Unref();
  }
  if (job->stops) self->completion_.Release();
}

// For an owner collected or an environment torn down without dispose(): the thread is idle
// (a pending job holds a reference to the owner), so a silent stop returns at once.
void JobThread::stopAndJoin() {
  if (!started_) {
    started_ = true;  // a constructor that threw before start(): nothing ran, nothing waits
    for (Job* job : queue_) delete job;
    queue_.clear();
    completion_.Release();
  }
  if (!thread_.joinable()) return;
  std::deque<Job*> dropped;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    dropped.swap(queue_);  // queued jobs never run: their environment is going away
    queue_.push_back(nullptr);
  }
  wake_.notify_one();
  thread_.join();
  for (Job* job : dropped) delete job;
  if (!disposing_) completion_.Release();  // a finished dispose() released it already
}

}  // namespace vgg
