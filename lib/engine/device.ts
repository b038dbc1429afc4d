import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { VggError, argError, describe } from '../errors';
import { native, type Precision } from '../native';

export type { Precision };

/** 'cpu' (oneDNN), 'cuda' (device 0) or 'cuda:N'. */
export type Device = 'cpu' | 'cuda' | `cuda:${number}`;

const PRECISIONS: Record<'cpu' | 'cuda', Precision[]> = { cpu: ['fp32', 'bf16', 'int8'], cuda: ['fp32', 'bf16', 'fp16'] };

/** The CUDA device index a device string names, or -1 for the CPU. */
export function cudaIndex(device: unknown): number {
  if (device === 'cpu') return -1;
  if (device === 'cuda') return 0;
  const m = typeof device === 'string' ? /^cuda:(\d{1,3})$/.exec(device) : null;
  if (!m) throw argError('options.device', "'cpu', 'cuda' or 'cuda:N'", device);
  return Number(m[1]);
}

export function checkPrecision(precision: unknown, cuda: boolean): Precision {
  const allowed = PRECISIONS[cuda ? 'cuda' : 'cpu'];
  if (!allowed.includes(precision as Precision)) {
    throw new VggError('E_ARG', `Expected options.precision to be one of ${allowed.join(', ')} on the ${cuda ? 'GPU' : 'CPU'} but received ${describe(precision)}`);
  }
  return precision as Precision;
}

let pythonDirs: Promise<string[]> | undefined;

/**
 * Where cuDNN and cuBLASLt may be, in order: VGGNET_CUDNN_PATH (a folder or the library
 * itself), then the `lib` folders of the `nvidia-*` Python packages of `python3`.
 * The system loader path is tried after these by the addon.
 */
export async function cudaLibraryDirs(): Promise<string[]> {
  const dirs: string[] = [];
  const env = process.env.VGGNET_CUDNN_PATH;
  if (env) dirs.push(fs.existsSync(env) && fs.statSync(env).isFile() ? path.dirname(env) : env);
  pythonDirs ??= findPythonPackageDirs();
  return [...dirs, ...(await pythonDirs)];
}

/** Asks python3 (off the JS thread) where its nvidia-* wheels are; none if it cannot say. */
function findPythonPackageDirs(): Promise<string[]> {
  // CUDA 13's wheels: cuDNN in nvidia/cudnn/lib, cuBLAS(Lt) in nvidia/cu13/lib (12's: nvidia/cublas/lib).
  const script = [
    'import glob, nvidia',
    'for d in nvidia.__path__:',
    '    for lib in sorted(glob.glob(d + "/*/lib")): print(lib)',
  ].join('\n');
  return new Promise((resolve) => {
    execFile(process.env.VGGNET_PYTHON ?? 'python3', ['-c', script], { encoding: 'utf8', timeout: 10_000 }, (err, out) => {
      resolve(err ? [] : out.split('\n').filter((d) => d && fs.existsSync(d)));
    });
  });
}

/** A backend that would not start, with the fix when the reason suggests one (the library loader names its own). */
export function backendError(device: string, reason: string): VggError {
  let fix = '';
  if (/no CUDA backend/.test(reason)) fix = '; rebuild vggnet on a machine with nvcc (CUDA 13) to get it';
  else if (/driver/i.test(reason)) fix = '; install the NVIDIA driver (nvidia-smi must work)';
  return new VggError('E_BACKEND', `cannot use device ${device}: ${reason}${fix}`);
}

export interface CudaStatus {
  /** True when this build has the CUDA backend, cuDNN and cuBLASLt load, and a GPU answers. */
  available: boolean;
  /** Why not, with the fix; absent when available. */
  reason?: string;
  runtime?: string;
  devices?: number;
  cudnn?: { path: string; version: number };
  cublasLt?: { path: string; version: number };
}

/**
 * What the CUDA backend would find on this machine. The probe loads cuDNN and asks the driver
 * for its GPUs (tens of milliseconds, once); it rejects only if the addon itself cannot load.
 */
export async function cudaStatus(): Promise<CudaStatus> {
  const runtime = native().versions().cuda;
  if (runtime === null) return { available: false, reason: backendError('cuda', 'this build of vggnet has no CUDA backend').message };
  const p = native().cudaProbe(await cudaLibraryDirs());
  const status: CudaStatus = { available: false, runtime };
  if (p.cudnn !== undefined) {
    status.cudnn = { path: p.cudnn, version: p.cudnnVersion! };
    status.cublasLt = { path: p.cublasLt!, version: p.cublasLtVersion! };
  }
  if (p.devices !== undefined) status.devices = p.devices;
  const why = p.librariesError ?? (p.devicesError ? `no usable CUDA driver or GPU (${p.devicesError})` : p.devices === 0 ? 'no CUDA GPU found' : undefined);
  if (why) status.reason = backendError('cuda', why).message;
  else status.available = true;
  return status;
}
