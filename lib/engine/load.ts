import * as os from 'node:os';
import { VggError, checkBoolean, checkInt, checkOptions } from '../errors';
import { native } from '../native';
import { loadCalibration, type Calibration } from '../weights/calibration';
import { openWeights, type ModelWeights } from '../weights/open';
import { checkPrecision, cudaIndex, cudaLibraryDirs, type Device, type Precision } from './device';
import { checkHead, Engine, type EngineSettings } from './model';
import type { Head } from '../arch/topology';

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
  /** A packed file: check each tensor's CRC-32 while loading (true by default; false trusts the storage). */
  verify?: boolean;
}

/** A class built on the engine (the public Model is one): what loadEngine constructs. */
export type EngineClass<M extends Engine> = new (weights: ModelWeights, settings: EngineSettings) => M;

/**
 * Loads a VGG from a safetensors file (torchvision or timm names, F32/F16/BF16) or a packed
 * file, mapped into memory rather than read, as an instance of `Kind`, running on its own
 * native thread.
 */
export async function loadEngine<M extends Engine>(file: string, options: LoadOptions | undefined, Kind: EngineClass<M>): Promise<M> {
  const settings = checkLoadOptions(options);  // before the file, so a bad option fails fast
  return startEngine(file, await openWeights(file, { verify: settings.verify }), settings, Kind);
}

export type LoadSettings = ReturnType<typeof checkLoadOptions>;

/** The options that do not depend on the weights file, checked. */
export function checkLoadOptions(options: LoadOptions | undefined) {
  const opts = checkOptions(options, 'options', ['head', 'threads', 'device', 'precision', 'winograd', 'calibration', 'verify']);
  const head = checkHead(opts.head ?? 'fixed', 'options.head');
  const threads = checkInt(opts.threads ?? os.availableParallelism(), 'options.threads', { max: 1024 });
  if (opts.winograd !== undefined) checkBoolean(opts.winograd, 'options.winograd');
  if (opts.verify !== undefined) checkBoolean(opts.verify, 'options.verify');
  const device = opts.device ?? 'cpu';
  return { ...opts, head, threads, device, cudaDevice: cudaIndex(device) };
}

/** loadEngine on weights already opened (vgg pack reads their biases as well). */
export async function startEngine<M extends Engine>(file: string, weights: ModelWeights, opts: LoadSettings, Kind: EngineClass<M>): Promise<M> {
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
  const model = new Kind(weights, { head, threads, device, precision, winograd, calibration, cudaDevice, libraryDirs });
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
