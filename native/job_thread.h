// A native thread that runs queued jobs one at a time, in order, and settles each caller's
// Promise on the JS thread through a thread-safe function: what the executor (inference) and
// the trainer share, so that neither blocks the event loop and concurrent calls queue.
#pragma once
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>
#include <napi.h>

namespace vgg {

class JobThread {
 public:
  // The baton: a job's work, its JS inputs pinned until it settles, and its result.
  struct Job {
    virtual ~Job() = default;
    // On the native thread, in queue order; `next` is the job queued behind it (null if none),
    // which stays put until this thread pops it. Throws to reject the Promise.
    virtual void run(Job* next) = 0;
    // On the JS thread once run() returned: what the Promise resolves to.
    virtual Napi::Value result(Napi::Env env) { return env.Undefined(); }
    std::vector<Napi::Reference<Napi::Value>> pins;

   private:
    friend class JobThread;
    std::optional<Napi::Promise::Deferred> deferred;
    std::string error;
    bool stops = false;
  };

  // `owner` is the JS object the thread serves: referenced while jobs are pending, so that it
  // outlives them. `name` names the thread-safe function and the errors.
  JobThread(Napi::Env env, const std::string& name, Napi::Reference<Napi::Object>& owner);
  ~JobThread();

  // Starts the thread; `atEnd` runs on it last, however it stops (frees what lives there).
  void start(std::function<void()> atEnd);
  // Queues a job; throws a Napi::Error once stop() was called.
  Napi::Promise enqueue(std::unique_ptr<Job> job);
  // dispose(): `last` runs after the queued jobs, then the thread ends. Later calls resolve at once.
  Napi::Promise stop(std::unique_ptr<Job> last);

  int pending() const { return pending_; }

 private:
  static void Complete(Napi::Env env, Napi::Function, JobThread* self, Job* job);
  using Completion = Napi::TypedThreadSafeFunction<JobThread, Job, Complete>;

  void loop();
  void stopAndJoin();
  static void onEnvCleanup(void* self);

  Napi::Env env_;
  std::string name_;
  Napi::Reference<Napi::Object>& owner_;
  Completion completion_;
  std::thread thread_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Job*> queue_;
  int pending_ = 0;  // jobs queued or running, counted on the JS thread
  bool disposing_ = false;
  bool started_ = false;
};

}  // namespace vgg
