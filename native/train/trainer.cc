#include "trainer.h"

#include <stdexcept>

namespace vgg::train {

namespace {
float* floats(const Napi::Value& v) { return v.As<Napi::Float32Array>().Data(); }
int int32(const Napi::Value& v) { return v.As<Napi::Number>().Int32Value(); }
float number(const Napi::Object& o, const char* key) { return o.Get(key).As<Napi::Number>().FloatValue(); }
}  // namespace

// Copies the layers (hundreds of MB for fc6) on the trainer's thread, not the JS thread.
struct Trainer::InitJob : JobThread::Job {
  Trainer* self;
  std::vector<FcLayerData> layers;
  TrainSettings settings;
  explicit InitJob(Trainer* s) : self(s) {}
  void run(Job*) override { self->stack_ = std::make_unique<FcStack>(layers, settings); }
};

struct Trainer::StepJob : JobThread::Job {
  Trainer* self;
  const float* features;
  const int32_t* labels;
  int n;
  float learningRate;
  StepOut out{};
  explicit StepJob(Trainer* s) : self(s) {}
  void run(Job*) override { out = self->stack().step(features, labels, n, learningRate); }
  Napi::Value result(Napi::Env env) override {
    Napi::Object o = Napi::Object::New(env);
    o.Set("loss", out.loss);
    o.Set("correct", out.correct);
    return o;
  }
};

struct Trainer::PredictJob : JobThread::Job {
  Trainer* self;
  const float* features;
  int n;
  float* logits;
  explicit PredictJob(Trainer* s) : self(s) {}
  void run(Job*) override { self->stack().predict(features, n, logits); }
};

struct Trainer::WeightsJob : JobThread::Job {
  Trainer* self;
  std::vector<std::pair<float*, float*>> out;
  explicit WeightsJob(Trainer* s) : self(s) {}
  void run(Job*) override {
    for (size_t l = 0; l < out.size(); l++) self->stack().copyWeights(l, out[l].first, out[l].second);
  }
};

struct Trainer::MasksJob : JobThread::Job {
  Trainer* self;
  std::vector<std::vector<float>> masks;
  explicit MasksJob(Trainer* s) : self(s) {}
  void run(Job*) override { masks = self->stack().lastMasks(); }
  Napi::Value result(Napi::Env env) override {
    Napi::Array out = Napi::Array::New(env, masks.size());
    for (size_t i = 0; i < masks.size(); i++) {
      Napi::Float32Array m = Napi::Float32Array::New(env, masks[i].size());
      std::copy(masks[i].begin(), masks[i].end(), m.Data());
      out.Set(i, m);
    }
    return out;
  }
};

struct Trainer::StopJob : JobThread::Job {
  Trainer* self;
  explicit StopJob(Trainer* s) : self(s) {}
  void run(Job*) override { self->stack_.reset(); }
};

Napi::Function Trainer::Define(Napi::Env env) {
  return DefineClass(env, "Trainer",
                     {InstanceMethod<&Trainer::Step>("step"), InstanceMethod<&Trainer::Predict>("predict"),
                      InstanceMethod<&Trainer::Weights>("weights"), InstanceMethod<&Trainer::Masks>("masks"),
                      InstanceMethod<&Trainer::Dispose>("dispose"), InstanceAccessor<&Trainer::Pending>("pending"),
                      InstanceAccessor<&Trainer::Ready>("ready")});
}

// new Trainer({ layers: { inputs, outputs, weight, bias }[], momentum, weightDecay, dropout,
// inputDropout, seed, threads }); the arrays stay pinned until the first job copied them.
Trainer::Trainer(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Trainer>(info), jobs_(info.Env(), "trainer", *this) {
  Napi::Object js = info[0].As<Napi::Object>();
  auto init = std::make_unique<InitJob>(this);
  Napi::Array layers = js.Get("layers").As<Napi::Array>();
  for (uint32_t i = 0; i < layers.Length(); i++) {
    Napi::Object l = layers.Get(i).As<Napi::Object>();
    init->layers.push_back({int32(l.Get("inputs")), int32(l.Get("outputs")), floats(l.Get("weight")), floats(l.Get("bias"))});
    init->pins.push_back(Napi::Persistent(l.Get("weight")));
    init->pins.push_back(Napi::Persistent(l.Get("bias")));
  }
  init->settings = {number(js, "momentum"), number(js, "weightDecay"), number(js, "dropout"),
                    js.Get("inputDropout").ToBoolean(), static_cast<uint64_t>(js.Get("seed").As<Napi::Number>().Int64Value()),
                    int32(js.Get("threads"))};
  ready_ = Napi::Persistent(jobs_.enqueue(std::move(init)));
  jobs_.start([this] { stack_.reset(); });
}

FcStack& Trainer::stack() {
  if (!stack_) throw std::runtime_error("the trainer failed to start");
  return *stack_;
}

// step(features, labels: Int32Array, n, learningRate) -> Promise<{ loss, correct }>
Napi::Value Trainer::Step(const Napi::CallbackInfo& info) {
  auto job = std::make_unique<StepJob>(this);
  job->features = floats(info[0]);
  job->labels = info[1].As<Napi::Int32Array>().Data();
  job->n = int32(info[2]);
  job->learningRate = info[3].As<Napi::Number>().FloatValue();
  job->pins.push_back(Napi::Persistent(info[0]));
  job->pins.push_back(Napi::Persistent(info[1]));
  return jobs_.enqueue(std::move(job));
}

// predict(features, n, logits: Float32Array) -> Promise<void>
Napi::Value Trainer::Predict(const Napi::CallbackInfo& info) {
  auto job = std::make_unique<PredictJob>(this);
  job->features = floats(info[0]);
  job->n = int32(info[1]);
  job->logits = floats(info[2]);
  job->pins.push_back(Napi::Persistent(info[0]));
  job->pins.push_back(Napi::Persistent(info[2]));
  return jobs_.enqueue(std::move(job));
}

// weights(out: [weight, bias][]) -> Promise<void>, each pair sized as its layer
Napi::Value Trainer::Weights(const Napi::CallbackInfo& info) {
  auto job = std::make_unique<WeightsJob>(this);
  Napi::Array out = info[0].As<Napi::Array>();
  for (uint32_t i = 0; i < out.Length(); i++) {
    Napi::Array pair = out.Get(i).As<Napi::Array>();
    job->out.emplace_back(floats(pair.Get(0u)), floats(pair.Get(1u)));
    job->pins.push_back(Napi::Persistent(pair.Get(0u)));
    job->pins.push_back(Napi::Persistent(pair.Get(1u)));
  }
  return jobs_.enqueue(std::move(job));
}

// masks() -> Promise<Float32Array[]>: the last step's dropout multipliers (tests)
Napi::Value Trainer::Masks(const Napi::CallbackInfo&) { return jobs_.enqueue(std::make_unique<MasksJob>(this)); }

Napi::Value Trainer::Dispose(const Napi::CallbackInfo&) { return jobs_.stop(std::make_unique<StopJob>(this)); }

Napi::Value Trainer::Pending(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), jobs_.pending()); }

Napi::Value Trainer::Ready(const Napi::CallbackInfo&) { return ready_.Value(); }

}  // namespace vgg::train
