import * as fs from 'node:fs';
import * as path from 'node:path';
import { VggError } from './errors';

/** One feature layer as the addon reads it (native/js_plan.cc into native/plan.h). */
export type NativeFeatureOp =
  | { kind: 'conv'; kernel: number; inC: number; outC: number; weight: Float32Array | null; bias: Float32Array; outScale?: number }
  | { kind: 'pool' }
  | { kind: 'lrn'; size: number; alpha: number; beta: number; k: number; outScale?: number };

/** `weight` is null when a packed file supplies it; `outScale` (int8) is 255 / the layer's calibrated maximum. */
export interface NativeFcOp { inF: number; outF: number; weight: Float32Array | null; bias: Float32Array; outScale?: number }

/** One layer's weights in a primitive's layout: `layer` counts the convs, then fc6, fc7, fc8. */
export interface NativePackedWeight {
  layer: number;
  /** The bytes of oneDNN's memory descriptor (dnnl_memory_desc_t). */
  layout: Uint8Array;
  data: Uint8Array;
  /** int8: the per-output-channel scales the weights were quantized with. */
  scales?: Float32Array;
}

export type Precision = 'fp32' | 'bf16' | 'fp16' | 'int8';

export interface NativePlan {
  threads: number;
  /** -1 for the CPU, else the CUDA device index. */
  cudaDevice: number;
  precision: Precision;
  /** CPU fp32: Winograd for the 3x3 convolutions. */
  winograd: boolean;
  /** A packed file's weights (CPU only). */
  packed?: NativePackedWeight[];
  /** Folders to look in for libcudnn.so.9 and libcublasLt.so.13 (before the loader path). */
  libraryDirs: string[];
  lastC: number;
  features: NativeFeatureOp[];
  fc: [NativeFcOp, NativeFcOp, NativeFcOp];
  /**
   * The blobs each head numbers after the feature layers, and fc6's window: TypeScript's
   * declaration (lib/arch/topology.ts), which the addon refuses if it computes otherwise.
   */
  headBlobs: { fixed: readonly string[]; dense: readonly string[] };
  fc6Window: number;
}

export interface NativeExecutor {
  /** Resolves when every capture array holds its blob (NCHW or NC float32). */
  run(input: Float32Array, n: number, h: number, w: number, dense: boolean, captures: [number, Float32Array][]): Promise<void>;
  /** Compiles a network per [n, h, w, dense] and copies out every layer's weights as those networks hold them. */
  pack(shapes: [number, number, number, boolean][]): Promise<{ layer: number; layout: Buffer; data: Buffer; scales?: Float32Array }[]>;
  dispose(): Promise<void>;
  readonly pending: number;
  /** Settles once the backend has started (a GPU backend has its context and weights). */
  readonly ready: Promise<void>;
}

/** One fc layer as the trainer copies it in: `weight` is [outputs, inputs] row-major. */
export interface NativeTrainerLayer { inputs: number; outputs: number; weight: Float32Array; bias: Float32Array }

export interface NativeTrainerOptions {
  layers: NativeTrainerLayer[];
  momentum: number;
  weightDecay: number;
  /** 0 turns dropout off. */
  dropout: number;
  inputDropout: boolean;
  seed: number;
  threads: number;
}

/** An fc stack trained on its own native thread; every call queues behind the ones before it. */
export interface NativeTrainer {
  /** One SGD step on n rows (the arrays stay untouched until it resolves). */
  step(features: Float32Array, labels: Int32Array, n: number, learningRate: number): Promise<{ loss: number; correct: number }>;
  /** Fills `logits` [n, classes], without dropout. */
  predict(features: Float32Array, n: number, logits: Float32Array): Promise<void>;
  /** Copies each layer's current weight and bias into the given arrays. */
  weights(out: [Float32Array, Float32Array][]): Promise<void>;
  /** The last step's dropout multipliers (0 or 1/(1-p)): the input's (empty unless inputDropout), then each hidden layer's. */
  masks(): Promise<Float32Array[]>;
  dispose(): Promise<void>;
  readonly pending: number;
  /** Settles once the weights are copied in. */
  readonly ready: Promise<void>;
}

interface Addon {
  mapFile(file: string): ArrayBuffer;
  /** What this build has; a backend it lacks is null. */
  versions(): { onednn: string | null; isa: string | null; cuda: string | null };
  /** null in a build without the CUDA backend. */
  cudaProbe(libraryDirs: string[]): {
    cudnn?: string; cudnnVersion?: number; cublasLt?: string; cublasLtVersion?: number; librariesError?: string;
    devices?: number; devicesError?: string;
  };
  Executor: new (plan: NativePlan) => NativeExecutor;
  /** Absent in a build without oneDNN. */
  Trainer?: new (options: NativeTrainerOptions) => NativeTrainer;
  /** What a oneDNN memory descriptor's bytes describe; throws if they are not one (null without oneDNN). */
  describeLayout(layout: Uint8Array): { dims: number[]; dataType: string; kind: 'blocked' | 'wino'; bytes: number } | null;
}

let addon: Addon | undefined;

/** Where npm installs a prebuilt addon (the platform package in optionalDependencies, chosen by os/cpu/libc). */
const PREBUILT = 'linux-x64 with glibc 2.34+ (reinstall vggnet there without --omit=optional)';
/** The commands that build the addon inside an installed vggnet (README: "Build from source"). */
const FROM_SOURCE = 'apt-get install libdnnl-dev g++ make python3 && npm explore vggnet -- npm run build:source';

/**
 * The addon file: a local build first (a clone, or a from-source build, which someone made on
 * purpose: a prebuilt installed beside it must not shadow it), else the platform package.
 */
function addonFile(): string | undefined {
  const local = path.resolve(__dirname, '..', '..', 'build', 'Release', 'vggnet.node');
  if (fs.existsSync(local)) return local;
  try {
    return require.resolve(`@vggnet/${process.platform}-${process.arch}/vggnet.node`);
  } catch {
    return undefined;
  }
}

/** e.g. linux-x64 (glibc 2.36), linux-x64 (musl), darwin-arm64: what the message names. */
function runtimePlatform(): string {
  if (process.platform !== 'linux') return `${process.platform}-${process.arch}`;
  const header = (process.report.getReport() as { header?: { glibcVersionRuntime?: string } }).header;
  return `linux-${process.arch} (${header?.glibcVersionRuntime ? `glibc ${header.glibcVersionRuntime}` : 'musl'})`;
}

/** The compiled addon: a local build (build/Release) or the prebuilt platform package. */
export function native(): Addon {
  if (!addon) {
    const file = addonFile();
    if (!file) {
      throw new VggError('E_BACKEND', `vggnet has no native addon for ${runtimePlatform()}: prebuilt addons are for ${PREBUILT}; elsewhere build one: ${FROM_SOURCE}`);
    }
    try {
      addon = require(file) as Addon;
    } catch (e) {
      throw new VggError('E_BACKEND', `cannot load the native addon ${file}: ${(e as Error).message}`, { cause: e });
    }
  }
  return addon;
}
