import * as path from 'node:path';
import { VggError } from './errors';

/** One feature layer as the addon reads it (native/plan.h). */
export type NativeFeatureOp =
  | { kind: 'conv'; kernel: number; inC: number; outC: number; weight: Float32Array; bias: Float32Array }
  | { kind: 'pool' }
  | { kind: 'lrn'; size: number; alpha: number; beta: number; k: number };

export interface NativeFcOp { inF: number; outF: number; weight: Float32Array; bias: Float32Array }

export type Precision = 'fp32' | 'bf16' | 'fp16';

export interface NativePlan {
  threads: number;
  /** -1 for the CPU, else the CUDA device index. */
  cudaDevice: number;
  precision: Precision;
  /** Folders to look in for libcudnn.so.9 and libcublasLt.so.13 (before the loader path). */
  libraryDirs: string[];
  lastC: number;
  features: NativeFeatureOp[];
  fc: [NativeFcOp, NativeFcOp, NativeFcOp];
}

export interface NativeExecutor {
  /** Resolves when every capture array holds its blob (NCHW or NC float32). */
  run(input: Float32Array, n: number, h: number, w: number, dense: boolean, captures: [number, Float32Array][]): Promise<void>;
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
