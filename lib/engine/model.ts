import { VggError, argError, checkBoolean, checkOneOf, checkOptions, describe, isInt } from '../errors';
import { blobNames, countParams, hasClassifier, HEAD_BLOBS, inferShapes, noClassifier, type Arch, type CfgItem, type Head } from '../arch/topology';
import { native, type NativeExecutor } from '../native';
import type { Tensor } from '../tensor';
import type { Calibration } from '../weights/calibration';
import type { Naming } from '../weights/binding';
import type { ModelWeights } from '../weights/open';
import type { Preset } from '../weights/layers';
import { backendError, type Device, type Precision } from './device';
import { buildPlan } from './plan';

export interface RunOptions {
  /** Blob names to return; ['prob'] by default. */
  outputs?: string[];
  head?: Head;
  /** Average `prob` with the posteriors of the horizontally mirrored input. */
  flip?: boolean;
}

export interface ModelInfo {
  arch: string;
  batchNorm: boolean;
  cfg: CfgItem[];
  fcHidden: number;
  classes: number;
  params: number;
  /** The key names of the weights file; absent for a bare preset. */
  naming?: Naming;
  /** The preprocessing the weights expect ('caffe' for Caffe and Keras weights); absent for a bare preset. */
  preset?: Preset;
  /** The kind of file the weights came from; absent for a bare preset. */
  container?: string;
  /** The classes' names stored in the weights (`vgg train`'s); absent for ImageNet's and unnamed classes. */
  classNames?: string[];
}

/** What `model.info` and `vgg info` say about an architecture. */
export function archInfo(a: Arch, weights?: Pick<ModelWeights, 'naming' | 'preset' | 'container' | 'classNames'>): ModelInfo {
  const info: ModelInfo = { arch: a.arch, batchNorm: a.batchNorm, cfg: a.cfg, fcHidden: a.fcHidden, classes: a.classes, params: countParams(a) };
  if (weights) Object.assign(info, { naming: weights.naming, preset: weights.preset, container: weights.container });
  if (weights?.classNames) info.classNames = weights.classNames;
  return info;
}

export type Outputs = Record<string, Tensor>;

const HEADS: readonly Head[] = ['fixed', 'dense'];

export const checkHead = (value: unknown, name: string): Head => checkOneOf(value, name, HEADS);

/** What an engine is built with: the load options, checked and resolved. */
export interface EngineSettings {
  head: Head; threads: number; device: Device; precision: Precision; winograd: boolean; calibration?: Calibration;
  cudaDevice: number; libraryDirs: string[];
}

/** What the applications (classify, extract, the server's batcher) need of a model: it runs batches. */
export interface Runner {
  readonly info: ModelInfo;
  run(input: Tensor, options?: RunOptions): Promise<Outputs>;
}

export class Engine {
  readonly info: ModelInfo;
  readonly head: Head;
  readonly threads: number;
  readonly device: Device;
  readonly precision: Precision;
  readonly winograd: boolean;
  /** int8: the activation ranges in use. */
  readonly calibration: Calibration | undefined;
  #executor: NativeExecutor;
  #disposed: Promise<void> | undefined;
  #arch: Arch;

  /** Use loadModel(). */
  constructor(weights: ModelWeights, settings: EngineSettings) {
    const { head, threads, device, precision, winograd, calibration, cudaDevice, libraryDirs } = settings;
    this.info = archInfo(weights.arch, weights);
    this.head = head;
    this.threads = threads;
    this.device = device;
    this.precision = precision;
    this.winograd = winograd;
    this.calibration = calibration;
    this.#arch = weights.arch;
    // The plan pins the weights (and the mapped file) in the executor until dispose() is done.
    const { Executor } = native();
    try {
      this.#executor = new Executor({
        ...buildPlan(weights, calibration), threads, cudaDevice, precision, winograd, libraryDirs,
        ...(weights.packed ? { packed: weights.packed.packed } : {}),
      });
    } catch (e) {
      throw new VggError('E_BACKEND', `the native addon refused the network: ${(e as Error).message}`, { cause: e });
    }
  }

  /**
   * Every layer's weights in the layouts this machine's primitives choose for these input
   * shapes ([n, h, w, head]): what `vgg pack` writes.
   */
  async packLayouts(shapes: [number, number, number, Head][]): ReturnType<NativeExecutor['pack']> {
    if (this.#disposed) throw new VggError('E_DISPOSED', 'this model was disposed; load it again to pack it');
    for (const [n, h, w, head] of shapes) {
      if (n > 1024 || h > 4096 || w > 4096) throw new VggError('E_SHAPE', `cannot pack for [${n}, 3, ${h}, ${w}]: batches up to 1024 and sides up to 4096 pixels`);
      inferShapes(this.#arch, n, h, w, head);
    }
    try {
      return await this.#executor.pack(shapes.map(([n, h, w, head]) => [n, h, w, head === 'dense']));
    } catch (e) {
      throw new VggError('E_BACKEND', `packing failed: ${(e as Error).message}`, { cause: e });
    }
  }

  /** Resolves once the backend runs (a GPU one has its context and weights); else disposes. */
  async started(): Promise<void> {
    try {
      await this.#executor.ready;
    } catch (e) {
      await this.dispose();
      throw backendError(this.device, (e as Error).message);
    }
  }

  /** Jobs queued or running on this model's native thread. */
  get pending(): number {
    return this.#executor.pending;
  }

  /** Every blob name `run` accepts for a head. */
  blobNames(head: Head = this.head): string[] {
    return blobNames(this.#arch, head);
  }

  /**
   * Runs a batch [n, 3, h, w] (NCHW float32, already normalized) and resolves to the requested
   * blobs, each as { data, shape } in NCHW (or [n, features]).
   */
  async run(input: Tensor, options?: RunOptions): Promise<Outputs> {
    const callSite = new Error();
    const executor = this.#executor;
    if (this.#disposed) throw new VggError('E_DISPOSED', 'this model was disposed; load it again to run it');
    const opts = checkOptions(options as RunOptions | undefined, 'options', ['outputs', 'head', 'flip']);
    const head = checkHead(opts.head ?? this.head, 'options.head');
    const flip = opts.flip === undefined ? false : checkBoolean(opts.flip, 'options.flip');
    const [n, , h, w] = checkInput(input);
    const names = this.blobNames(head);
    const classifier = hasClassifier(this.#arch);
    const asked = opts.outputs ?? [classifier ? 'prob' : names[names.length - 1]];
    const headBlob = Array.isArray(asked) && !classifier && asked.find((o) => HEAD_BLOBS.dense.includes(o));
    if (headBlob) throw noClassifier(`options.outputs asks for ${headBlob}`);
    const outputs = checkOutputs(asked, names);

    const batch = flip ? 2 * n : n;
    const shapes = new Map(inferShapes(this.#arch, batch, h, w, head).map((b) => [b.name, b.shape]));
    const wanted = flip && !outputs.includes('prob') ? [...outputs, 'prob'] : outputs;
    const captures = wanted.map((name): [number, Float32Array] => [names.indexOf(name), allocate(shapes.get(name)!, name)]);
    try {
      // The native thread reads the input while the run waits in the queue: it gets a copy of its
      // own, since the caller may transfer or detach theirs meanwhile (about 1% of a run's time).
      await executor.run(flip ? withMirror(input.data, n, h, w) : input.data.slice(), batch, h, w, head === 'dense', captures);
    } catch (e) {
      const err = new VggError('E_BACKEND', `inference failed: ${(e as Error).message}`, { cause: e });
      err.stack = `${err.name}: ${err.message}\n${callSite.stack?.split('\n').slice(1).join('\n')}`;
      throw err;
    }

    const out: Outputs = {};
    for (const [i, name] of outputs.entries()) {
      const shape = [n, ...shapes.get(name)!.slice(1)];
      const data = captures[i][1];
      out[name] = { data: flip ? data.subarray(0, data.length / 2) : data, shape };
    }
    if (flip) out.prob = { data: meanOfHalves(captures[wanted.indexOf('prob')][1]), shape: [n, this.info.classes] };
    return out;
  }

  /** Finishes queued runs, then frees the native thread, primitives and weights. */
  dispose(): Promise<void> {
    this.#disposed ??= this.#executor.dispose();
    return this.#disposed;
  }
}

/** A blob's array; past what a typed array can hold (or memory allows) an E_SHAPE, not a RangeError. */
function allocate(shape: number[], name: string): Float32Array {
  const count = shape.reduce((a, b) => a * b, 1);
  try {
    return new Float32Array(count);
  } catch (e) {
    throw new VggError('E_SHAPE', `blob ${name} would be ${JSON.stringify(shape)} (${count} floats), more than one array can hold; run a smaller batch or input`, { cause: e });
  }
}

function checkInput(input: Tensor): number[] {
  if (typeof input !== 'object' || input === null) throw argError('input', 'a tensor { data: Float32Array, shape: [n, 3, h, w] }', input);
  const { data, shape } = input;
  if (!(data instanceof Float32Array)) throw argError('input.data', 'a Float32Array', data);
  const buffer = data.buffer as ArrayBuffer & { resizable?: boolean; growable?: boolean; detached?: boolean };
  if (isDetached(buffer)) {
    throw new VggError('E_ARG', 'Expected input.data over a live ArrayBuffer but its buffer is detached (transferred with postMessage or structuredClone); pass a copy if the original must be transferred');
  }
  // Another thread may write a shared buffer while run() copies it: the answer would depend on timing.
  if (buffer.resizable || buffer.growable || (typeof SharedArrayBuffer !== 'undefined' && buffer instanceof SharedArrayBuffer)) {
    throw argError('input.data', 'a Float32Array over a plain, fixed-length ArrayBuffer', data);
  }
  if (!Array.isArray(shape) || shape.length !== 4 || !shape.every((v) => isInt(v))) {
    throw new VggError('E_SHAPE', `Expected input.shape to be [n, 3, h, w] of positive integers but received ${Array.isArray(shape) ? JSON.stringify(shape) : describe(shape)}`);
  }
  if (shape[1] !== 3) throw new VggError('E_SHAPE', `Expected input.shape[1] (channels) to be 3 but received ${shape[1]}`);
  const count = shape.reduce((a, b) => a * b, 1);
  if (count !== data.length) throw new VggError('E_SHAPE', `input.shape ${JSON.stringify(shape)} has ${count} elements but input.data has ${data.length}`);
  return shape;
}

/** `detached` arrived in Node 22; before it, only a detached buffer refuses to be viewed. */
function isDetached(buffer: ArrayBuffer & { detached?: boolean }): boolean {
  if (typeof buffer.detached === 'boolean') return buffer.detached;
  if (buffer.byteLength !== 0) return false;
  try {
    new Uint8Array(buffer);
    return false;
  } catch {
    return true;
  }
}

function checkOutputs(outputs: unknown, names: string[]): string[] {
  if (!Array.isArray(outputs) || outputs.length === 0) throw argError('options.outputs', 'a non-empty array of blob names', outputs);
  for (const o of outputs) {
    if (!names.includes(o)) throw new VggError('E_ARG', `Unknown blob ${describe(o)} in options.outputs; this model has ${names.join(', ')}`);
  }
  if (new Set(outputs).size !== outputs.length) throw argError('options.outputs', 'blob names without repeats', outputs);
  return outputs as string[];
}

/** The batch followed by its horizontal mirror: [2n, 3, h, w]. */
function withMirror(data: Float32Array, n: number, h: number, w: number): Float32Array {
  const out = allocate([2 * n, 3, h, w], 'input with its mirror (flip)');
  out.set(data);
  const mirror = out.subarray(data.length);
  for (let row = 0; row < n * 3 * h; row++) {
    const at = row * w;
    for (let x = 0; x < w; x++) mirror[at + x] = data[at + w - 1 - x];
  }
  return out;
}

function meanOfHalves(prob: Float32Array): Float32Array {
  const half = prob.length / 2;
  const out = new Float32Array(half);
  for (let i = 0; i < half; i++) out[i] = (prob[i] + prob[half + i]) / 2;
  return out;
}
