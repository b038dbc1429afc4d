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
  /** What a oneDNN memory descriptor's bytes describe; throws if they are not one (null without oneDNN). */
  describeLayout(layout: Uint8Array): { dims: number[]; dataType: string; kind: 'blocked' | 'wino'; bytes: number } | null;
}

let addon: Addon | undefined;

/** The compiled addon; cmake-js and node-gyp both put it in build/Release. */
export function native(): Addon {
  if (!addon) {
    const file = path.resolve(__dirname, '..', '..', 'build', 'Release', 'vggnet.node');
    try {
      addon = require(file) as Addon;
    } catch (e) {
      throw new VggError('E_BACKEND', `cannot load the native addon ${file}: ${(e as Error).message} (run \`npm run build\`)`, { cause: e });
    }
  }
  return addon;
}
