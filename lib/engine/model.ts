import * as fs from 'node:fs';
import * as os from 'node:os';
import { classify, type ClassifyOptions, type Prediction } from '../tasks/classify';
import { VggError, argError, checkOptions, describe } from '../errors';
import { extract, type ExtractOptions, type ExtractRecord, type ExtractSource } from '../tasks/extract';
import { backendError, checkPrecision, cudaIndex, cudaLibraryDirs, type Device, type Precision } from './device';
import { loadCalibration, outScale, type Calibration } from '../weights/calibration';
import { native, type NativeExecutor, type NativeFeatureOp, type NativePlan } from '../native';
import { isPacked, readPacked, type PackedWeights } from '../weights/packed';
import { parseSafetensors, type Tensor } from '../weights/safetensors';
import { blobNames, countParams, FC6_WINDOW, featureLayers, inferShapes, lastWidth, LRN, type Arch, type CfgItem, type Head } from '../arch/topology';
import { bindWeights, type Naming } from '../weights/binding';

export interface LoadOptions {
  /** The head `run` uses unless told otherwise: 'fixed' (torchvision) or 'dense' (the paper's). */
  head?: Head;
  /** oneDNN threads for this model; all cores by default. */
  threads?: number;
  /** 'cpu' (oneDNN, the default), 'cuda' or 'cuda:N' (cuDNN and cuBLASLt). */
  device?: Device;
  /**
   * 'fp32' (the default), 'bf16' or 'int8' on the CPU; 'fp32', 'bf16' or 'fp16' on a GPU.
   * Blobs are float32 either way. A packed file's precision is its own.
   */
  precision?: Precision;
  /** CPU fp32: Winograd convolutions for the 3x3 layers (faster, about 1e-4 relative error). */
  winograd?: boolean;
  /** int8: the activation ranges `vgg calibrate` measured, as its file's path or its content. */
  calibration?: string | Calibration;
}

/** A weights file bound to its architecture; a packed file's weights are in `packed` instead. */
export interface ModelWeights {
  arch: Arch;
  naming: Naming;
  convs: { weight: Float32Array | null; bias: Float32Array }[];
  fc: [{ weight: Float32Array | null; bias: Float32Array }, { weight: Float32Array | null; bias: Float32Array }, { weight: Float32Array | null; bias: Float32Array }];
  packed?: PackedWeights;
}

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
}

/** What `model.info` and `vgg info` say about an architecture. */
export function archInfo(a: Arch, naming?: Naming): ModelInfo {
  const info: ModelInfo = { arch: a.arch, batchNorm: a.batchNorm, cfg: a.cfg, fcHidden: a.fcHidden, classes: a.classes, params: countParams(a) };
  if (naming) info.naming = naming;
  return info;
}

export type Outputs = Record<string, Tensor>;

const HEADS: Head[] = ['fixed', 'dense'];

function checkHead(value: unknown, name: string): Head {
  if (!HEADS.includes(value as Head)) throw argError(name, `one of ${HEADS.join(', ')}`, value);
  return value as Head;
}

/**
 * Loads a VGG from a safetensors file (torchvision or timm names, F32/F16/BF16) or a packed
 * file, mapped into memory rather than read. The returned model runs on its own native thread.
 */
export async function loadModel(file: string, options?: LoadOptions): Promise<Model> {
  const settings = checkLoadOptions(options);  // before the file, so a bad option fails fast
  return startModel(file, await openWeights(file), settings);
}

type LoadSettings = ReturnType<typeof checkLoadOptions>;

/** The options that do not depend on the weights file, checked. */
export function checkLoadOptions(options: LoadOptions | undefined) {
  const opts = checkOptions(options as LoadOptions | undefined, 'options', ['head', 'threads', 'device', 'precision', 'winograd', 'calibration']);
  const head = checkHead(opts.head ?? 'fixed', 'options.head');
  const threads = opts.threads ?? os.availableParallelism();
  if (!Number.isSafeInteger(threads) || threads < 1 || threads > 1024) throw argError('options.threads', 'an integer from 1 to 1024', opts.threads);
  if (opts.winograd !== undefined && typeof opts.winograd !== 'boolean') throw argError('options.winograd', 'a boolean', opts.winograd);
  const device = opts.device ?? 'cpu';
  return { ...opts, head, threads, device, cudaDevice: cudaIndex(device) };
}

/** loadModel on weights already opened (vgg pack reads their biases as well). */
export async function startModel(file: string, weights: ModelWeights, opts: LoadSettings): Promise<Model> {
  const { head, threads, device, cudaDevice } = opts;
  const packed = weights.packed?.header;
  if (packed && cudaDevice >= 0) throw new VggError('E_ARG', `${file} is a packed file, which only the CPU backend reads; load the original weights for device ${device}`);
  const precision = checkPrecision(opts.precision ?? packed?.precision ?? 'fp32', cudaDevice >= 0);
  const winograd = opts.winograd ?? packed?.winograd ?? false;
  if (winograd && (precision !== 'fp32' || cudaDevice >= 0)) throw new VggError('E_ARG', `options.winograd is for fp32 on the CPU, not ${precision} on ${device}`);
  if (packed && (precision !== packed.precision || winograd !== packed.winograd)) {
    const mode = (p: string, w: boolean) => `${p}${w ? ' with Winograd' : ''}`;
    throw new VggError('E_ARG', `${file} was packed for ${mode(packed.precision, packed.winograd)}, not ${mode(precision, winograd)}; pack it again with those options or load the original weights`);
  }
  let calibration: Calibration | undefined;
  if (precision === 'int8') {
    if (opts.calibration === undefined && !packed) {
      throw new VggError('E_ARG', `int8 needs activation ranges: make them with \`vgg calibrate --weights ${file} --input SAMPLES.safetensors --out ${file.replace(/\.safetensors$/, '')}.calib.json\` (or --images DIR) and pass { calibration: 'that file' }`);
    }
    calibration = loadCalibration(opts.calibration ?? packed!.calibration, weights.arch);
  } else if (opts.calibration !== undefined) {
    throw new VggError('E_ARG', `options.calibration is for int8, not ${precision}`);
  }
  if (precision === 'bf16' && cudaDevice < 0) warnIfBf16Emulated();
  const libraryDirs = cudaDevice >= 0 ? await cudaLibraryDirs() : [];
  const model = new Model(weights, { head, threads, device, precision, winograd, calibration, cudaDevice, libraryDirs });
  await model.started();
  return model;
}

let bf16Warned = false;

/** bf16 is a speed choice; where the CPU has no bf16 arithmetic, oneDNN emulates it, slower than fp32. */
function warnIfBf16Emulated(): void {
  const isa = native().versions().isa ?? '';
  if (bf16Warned || /bf16|amx/.test(isa)) return;
  bf16Warned = true;
  process.emitWarning(`this CPU (oneDNN ISA ${isa}) has no bf16 arithmetic (avx512_bf16 or AMX): oneDNN emulates it, and bf16 runs slower than fp32 here`, { code: 'VGGNET_BF16_EMULATED' });
}

/**
 * Maps a weights file (safetensors, or packed by `vgg pack`) and binds it to its architecture,
 * validating every tensor, without starting an executor: what `loadModel` and `vgg info` share.
 */
export async function openWeights(file: string): Promise<ModelWeights> {
  if (typeof file !== 'string' || file.length === 0) throw argError('path', 'a weights file path', file);
  let stat: fs.Stats;
  try {
    stat = await fs.promises.stat(file);
  } catch (e) {
    throw new VggError('E_IO', `cannot read weights file ${file}: ${(e as Error).message}`, { cause: e });
  }
  if (!stat.isFile()) throw new VggError('E_IO', `weights file ${file} is not a regular file`);
  if (stat.size < 8) throw new VggError('E_WEIGHTS_FORMAT', `${file}: not a valid safetensors file: file is ${stat.size} bytes, shorter than the 8-byte header length`);
  let mapped: ArrayBuffer;
  try {
    mapped = native().mapFile(file);
  } catch (e) {
    if (e instanceof VggError) throw e;
    throw new VggError('E_IO', `cannot map weights file ${file}: ${(e as Error).message}`, { cause: e });
  }
  const bytes = new Uint8Array(mapped);
  if (isPacked(bytes)) {
    const packed = readPacked(bytes, file);
    const { arch, naming } = packed.header;
    const layer = (i: number) => ({ weight: null, bias: packed.biases[i] });
    const convs = featureLayers(arch).filter((l) => l.kind === 'conv').map((_, i) => layer(i));
    const fc: ModelWeights['fc'] = [layer(convs.length), layer(convs.length + 1), layer(convs.length + 2)];
    return { arch, naming, convs, fc, packed };
  }
  return bindWeights(parseSafetensors(bytes, file));
}

export class Model {
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
  constructor(weights: ModelWeights, settings: {
    head: Head; threads: number; device: Device; precision: Precision; winograd: boolean; calibration?: Calibration;
    cudaDevice: number; libraryDirs: string[];
  }) {
    const { head, threads, device, precision, winograd, calibration, cudaDevice, libraryDirs } = settings;
    this.info = archInfo(weights.arch, weights.naming);
    this.head = head;
    this.threads = threads;
    this.device = device;
    this.precision = precision;
    this.winograd = winograd;
    this.calibration = calibration;
    this.#arch = weights.arch;
    // The plan pins the weights (and the mapped file) in the executor until dispose() is done.
    this.#executor = new (native().Executor)({
      ...buildPlan(weights, calibration), threads, cudaDevice, precision, winograd, libraryDirs,
      ...(weights.packed ? { packed: weights.packed.packed } : {}),
    });
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
    if (opts.flip !== undefined && typeof opts.flip !== 'boolean') throw argError('options.flip', 'a boolean', opts.flip);
    const flip = opts.flip ?? false;
    const [n, , h, w] = checkInput(input);
    const names = this.blobNames(head);
    const outputs = checkOutputs(opts.outputs ?? ['prob'], names);

    const batch = flip ? 2 * n : n;
    const shapes = new Map(inferShapes(this.#arch, batch, h, w, head).map((b) => [b.name, b.shape]));
    const wanted = flip && !outputs.includes('prob') ? [...outputs, 'prob'] : outputs;
    const captures = wanted.map((name): [number, Float32Array] => [names.indexOf(name), allocate(shapes.get(name)!, name)]);
    try {
      await executor.run(flip ? withMirror(input.data, n, h, w) : input.data, batch, h, w, head === 'dense', captures);
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

  /** The most probable classes of an image file or buffer: see classify(). */
  classify(image: string | Buffer, options?: ClassifyOptions): Promise<Prediction[]> {
    return classify(this, image, options);
  }

  /** Features of a stream of images, in input order, with decoding overlapping inference: see extract(). */
  extract(source: ExtractSource, options?: ExtractOptions): AsyncGenerator<ExtractRecord, void, undefined> {
    return extract(this, source, options);
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
  // The native thread reads the array while the run is queued: its memory must not move or shrink.
  const buffer = data.buffer as ArrayBuffer & { resizable?: boolean; growable?: boolean };
  if (buffer.resizable || buffer.growable || (typeof SharedArrayBuffer !== 'undefined' && buffer instanceof SharedArrayBuffer)) {
    throw argError('input.data', 'a Float32Array over a plain, fixed-length ArrayBuffer', data);
  }
  if (!Array.isArray(shape) || shape.length !== 4 || !shape.every((v) => Number.isSafeInteger(v) && v > 0)) {
    throw new VggError('E_SHAPE', `Expected input.shape to be [n, 3, h, w] of positive integers but received ${Array.isArray(shape) ? JSON.stringify(shape) : describe(shape)}`);
  }
  if (shape[1] !== 3) throw new VggError('E_SHAPE', `Expected input.shape[1] (channels) to be 3 but received ${shape[1]}`);
  const count = shape.reduce((a, b) => a * b, 1);
  if (count !== data.length) throw new VggError('E_SHAPE', `input.shape ${JSON.stringify(shape)} has ${count} elements but input.data has ${data.length}`);
  return shape;
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

/** The network for the addon: every layer in order with its weights (and int8 ranges), already checked. */
function buildPlan(weights: ModelWeights, calibration?: Calibration): Pick<NativePlan, 'lastC' | 'features' | 'fc'> {
  let conv = 0;
  const scale = (blob: string) => (calibration ? { outScale: outScale(calibration, blob) } : {});
  const features = featureLayers(weights.arch).map((l): NativeFeatureOp => {
    if (l.kind === 'pool') return { kind: 'pool' };
    if (l.kind === 'lrn') return { kind: 'lrn', ...LRN, ...scale(l.name) };
    return { kind: 'conv', kernel: l.kernel, inC: l.inC, outC: l.outC, ...weights.convs[conv++], ...scale(l.name) };
  });
  const c = lastWidth(weights.arch);
  const [fc6, fc7, fc8] = weights.fc;
  const { fcHidden, classes } = weights.arch;
  return {
    lastC: c,
    features,
    fc: [
      { inF: c * FC6_WINDOW * FC6_WINDOW, outF: fcHidden, ...fc6, ...scale('fc6') },
      { inF: fcHidden, outF: fcHidden, ...fc7, ...scale('fc7') },
      { inF: fcHidden, outF: classes, ...fc8 },
    ],
  };
}
