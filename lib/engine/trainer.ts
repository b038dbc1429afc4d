import * as os from 'node:os';
import { VggError, argError, checkBoolean, checkInt, checkOptions, describe } from '../errors';
import { native, type NativeTrainer } from '../native';

/** One fully connected layer's starting values. */
export interface FcLayerInit {
  /** [outputs, inputs] row-major: torchvision's Linear layout. */
  weight: Float32Array;
  /** [outputs]. */
  bias: Float32Array;
}

export interface TrainerOptions {
  /** 1 to 3 layers applied in order; ReLU (then dropout) after each but the last. */
  layers: FcLayerInit[];
  /** > 0; settable between steps as `trainer.learningRate`. */
  learningRate: number;
  /** 0.9 by default. */
  momentum?: number;
  /** L2 on every parameter, biases too, as torch.optim.SGD: 5e-4 by default. */
  weightDecay?: number;
  /** Dropout probability after each hidden ReLU, in [0, 1): 0.5 by default; 0 turns it off. */
  dropout?: number;
  /** Dropout on the input features too (a cached fc6/fc7 feature, whose dropout VGG applies): false by default. */
  inputDropout?: boolean;
  /** Seeds the dropout masks: 0 by default. Training is deterministic for a seed and thread count. */
  seed?: number;
  /** oneDNN threads; all cores by default. */
  threads?: number;
}

export interface StepResult {
  /** The batch's mean cross-entropy. */
  loss: number;
  /** Rows whose largest logit is their label. */
  correct: number;
}

/** Rows per native predict call: bounds the activations a long predict() allocates. */
const PREDICT_ROWS = 1024;
/** Rows per step: each batch size compiles a pass with activations of its own. */
const MAX_BATCH = 4096;
const MAX_UNITS = 1 << 20;

/**
 * A stack of 1 to 3 fully connected layers trained with mini-batch SGD (torch.optim.SGD's
 * update, softmax cross-entropy, dropout) on oneDNN, on a native thread of its own: steps never
 * block the event loop, and concurrent calls run one at a time in call order.
 */
export class FcTrainer {
  readonly inputs: number;
  readonly classes: number;
  #native: NativeTrainer;
  #shapes: [number, number][];  // [outputs, inputs] per layer
  #learningRate: number;
  #disposed: Promise<void> | undefined;

  /** Copies the layers in (off the event loop) and resolves once the trainer can step. */
  static async create(options: TrainerOptions): Promise<FcTrainer> {
    const trainer = new FcTrainer(options);
    try {
      await trainer.#native.ready;
    } catch (e) {
      await trainer.dispose();
      throw new VggError('E_BACKEND', `the trainer failed to start: ${(e as Error).message}`, { cause: e });
    }
    return trainer;
  }

  private constructor(options: TrainerOptions) {
    const opts = checkOptions(options, 'options', ['layers', 'learningRate', 'momentum', 'weightDecay', 'dropout', 'inputDropout', 'seed', 'threads']);
    const layers = checkLayers(opts.layers);
    this.#learningRate = checkLearningRate(opts.learningRate, 'options.learningRate');
    const momentum = checkNumber(opts.momentum ?? 0.9, 'options.momentum', 'a finite number of at least 0', (v) => v >= 0);
    const weightDecay = checkNumber(opts.weightDecay ?? 5e-4, 'options.weightDecay', 'a finite number of at least 0', (v) => v >= 0);
    const dropout = checkNumber(opts.dropout ?? 0.5, 'options.dropout', 'a probability in [0, 1)', (v) => v >= 0 && v < 1);
    const inputDropout = checkBoolean(opts.inputDropout ?? false, 'options.inputDropout');
    const seed = checkInt(opts.seed ?? 0, 'options.seed', { min: 0 });
    const threads = checkInt(opts.threads ?? os.availableParallelism(), 'options.threads', { max: 1024 });
    this.#shapes = layers.map((l) => [l.outputs, l.inputs]);
    this.inputs = layers[0].inputs;
    this.classes = layers[layers.length - 1].outputs;
    const { Trainer } = native();
    if (!Trainer) throw new VggError('E_BACKEND', 'this build of the native addon has no oneDNN backend, which training needs');
    this.#native = new Trainer({ layers, momentum, weightDecay, dropout, inputDropout, seed, threads });
  }

  get learningRate(): number {
    return this.#learningRate;
  }

  set learningRate(value: number) {
    this.#learningRate = checkLearningRate(value, 'learningRate');
  }

  /** One SGD step on n = labels.length rows (up to 4096) of `inputs` features each. */
  async step(features: Float32Array, labels: Int32Array): Promise<StepResult> {
    this.#check('step');
    if (!(labels instanceof Int32Array) || labels.length === 0 || labels.length > MAX_BATCH) {
      throw argError('labels', `an Int32Array of 1 to ${MAX_BATCH} labels (one per row of the batch)`, labels);
    }
    const n = labels.length;
    const rows = this.#features(features, n, 'features', `labels.length (${n}) rows`);
    const copy = labels.slice();
    for (let i = 0; i < n; i++) {
      if (copy[i] < 0 || copy[i] >= this.classes) {
        throw new VggError('E_ARG', `Expected labels in [0, ${this.classes}) but labels[${i}] is ${copy[i]}`);
      }
    }
    return this.#native.step(rows, copy, n, this.#learningRate).catch((e) => { throw backendError('training step', e); });
  }

  /** The logits [count, classes] of `count` rows, without dropout. */
  async predict(features: Float32Array, count: number): Promise<Float32Array> {
    this.#check('predict');
    checkInt(count, 'count');
    const rows = this.#features(features, count, 'features', `count (${count}) rows`);
    const logits = new Float32Array(count * this.classes);
    const pending: Promise<void>[] = [];
    for (let at = 0; at < count; at += PREDICT_ROWS) {
      const n = Math.min(PREDICT_ROWS, count - at);
      pending.push(this.#native.predict(rows.subarray(at * this.inputs, (at + n) * this.inputs), n, logits.subarray(at * this.classes, (at + n) * this.classes)));
    }
    await Promise.all(pending).catch((e) => { throw backendError('predict', e); });
    return logits;
  }

  /** Copies of each layer's current weight and bias. */
  async weights(): Promise<FcLayerInit[]> {
    this.#check('weights');
    const out = this.#shapes.map(([outputs, inputs]): [Float32Array, Float32Array] => [new Float32Array(outputs * inputs), new Float32Array(outputs)]);
    await this.#native.weights(out).catch((e) => { throw backendError('weights', e); });
    return out.map(([weight, bias]) => ({ weight, bias }));
  }

  /** Finishes the queued calls, then frees the native thread and the weights. */
  dispose(): Promise<void> {
    this.#disposed ??= this.#native.dispose();
    return this.#disposed;
  }

  /** Tests only: the last step's dropout multipliers (the input's, empty unless inputDropout, then each hidden layer's). */
  static lastDropoutMasks(trainer: FcTrainer): Promise<Float32Array[]> {
    trainer.#check('lastDropoutMasks');
    return trainer.#native.masks();
  }

  #check(method: string): void {
    if (this.#disposed) throw new VggError('E_DISPOSED', `this trainer was disposed; create another to call ${method}()`);
  }

  /** A copy of n rows of finite features: the caller may change or transfer theirs meanwhile. */
  #features(features: Float32Array, n: number, name: string, rows: string): Float32Array {
    if (!(features instanceof Float32Array)) throw argError(name, 'a Float32Array', features);
    if (features.length !== n * this.inputs) {
      throw new VggError('E_ARG', `Expected ${name} to hold ${rows} of ${this.inputs} floats (${n * this.inputs}) but it holds ${features.length}`);
    }
    const copy = features.slice();
    for (let i = 0; i < copy.length; i++) {
      if (!Number.isFinite(copy[i])) throw new VggError('E_ARG', `Expected finite ${name} but ${name}[${i}] is ${copy[i]}`);
    }
    return copy;
  }
}

function checkNumber(value: unknown, name: string, expected: string, ok: (v: number) => boolean): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || !ok(value)) throw argError(name, expected, value);
  return value;
}

const checkLearningRate = (value: unknown, name: string) => checkNumber(value, name, 'a finite number > 0', (v) => v > 0);

/** Each layer's shape, read from its bias and weight lengths; the stack must chain. */
function checkLayers(layers: unknown): { inputs: number; outputs: number; weight: Float32Array; bias: Float32Array }[] {
  if (!Array.isArray(layers) || layers.length < 1 || layers.length > 3) throw argError('options.layers', 'an array of 1 to 3 layers { weight, bias }', layers);
  let inputs = 0;
  return layers.map((layer: unknown, i) => {
    const name = `options.layers[${i}]`;
    if (typeof layer !== 'object' || layer === null) throw argError(name, 'an object { weight: Float32Array, bias: Float32Array }', layer);
    const { weight, bias } = layer as Partial<FcLayerInit>;
    if (!(bias instanceof Float32Array) || bias.length < 1 || bias.length > MAX_UNITS) {
      throw argError(`${name}.bias`, `a Float32Array of 1 to ${MAX_UNITS} floats (one per output)`, bias);
    }
    const outputs = bias.length;
    if (!(weight instanceof Float32Array) || weight.length === 0 || weight.length % outputs !== 0) {
      throw argError(`${name}.weight`, `a Float32Array [outputs, inputs] whose length is a multiple of the bias's ${outputs}`, weight);
    }
    const own = weight.length / outputs;
    if (i > 0 && own !== inputs) {
      throw new VggError('E_ARG', `Expected ${name}.weight to be [${outputs}, ${inputs}] (its inputs are layer ${i - 1}'s ${inputs} outputs) but it holds ${weight.length} floats (${describe(weight)})`);
    }
    if (own > MAX_UNITS) throw argError(`${name}.weight`, `at most ${MAX_UNITS} inputs per output`, weight);
    inputs = outputs;
    return { inputs: own, outputs, weight, bias };
  });
}

function backendError(what: string, e: unknown): VggError {
  return new VggError('E_BACKEND', `${what} failed: ${(e as Error).message}`, { cause: e });
}
