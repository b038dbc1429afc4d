import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import type { Device, Precision } from '../engine/device';
import { PRESETS } from '../images/preprocess';
import { VggError } from '../errors';
import { readF32, readSafetensorsFile } from '../weights/safetensors';
import type { Tensor } from '../tensor';
import type { LoadOptions } from '../engine';
import type { ProtocolOptions } from '../tasks/protocols';

/**
 * Prints the one line a failed command leaves on stderr, `vgg: E_CODE: message`, and sets exit
 * status 1 (3 for E_JOB_LOST). Scripts match on the code, so anything that is not a VggError is E_INTERNAL, and
 * stack traces only appear with VGG_DEBUG=1.
 */
export function reportError(e: unknown): void {
  // 3: a job Redis lost, which waiting will not bring back (vgg job wait, status).
  process.exitCode = e instanceof VggError && e.code === 'E_JOB_LOST' ? 3 : 1;
  let code: string;
  let message: string;
  if (e instanceof VggError) {
    [code, message] = [e.code, e.message];
  } else if (e instanceof Error && typeof (e as NodeJS.ErrnoException).syscall === 'string') {
    // A system call that failed outside our checks (a Redis server that refuses the connection).
    [code, message] = ['E_IO', e.message];
  } else if (e instanceof CommanderError) {
    [code, message] = ['E_ARG', e.message.replace(/^error: /, '')];
  } else {
    [code, message] = ['E_INTERNAL', e instanceof Error ? e.message : String(e)];
  }
  process.stderr.write(`vgg: ${code}: ${message.replace(/\s*\n\s*/g, ' ')}\n`);
  if (process.env.VGG_DEBUG === '1' && e instanceof Error) process.stderr.write(`${e.stack}\n`);
}

/**
 * Option parsers for commander. They throw InvalidArgumentError, which commander turns into a
 * usage error that names the option ("option '--threads <n>' argument '0' is invalid. ...").
 */
export function positiveInt(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n < 1) throw new InvalidArgumentError('Expected a positive integer.');
  return n;
}

export function commaList(value: string): string[] {
  const items = value.split(',').map((s) => s.trim());
  if (items.some((s) => s === '')) throw new InvalidArgumentError('Expected a comma-separated list of names, like fc7,prob.');
  if (new Set(items).size !== items.length) throw new InvalidArgumentError('Expected each name once.');
  return items;
}

/** Comma-separated positive integers, like 256,384,512. */
export function positiveIntList(value: string): number[] {
  return value.split(',').map((s) => positiveInt(s.trim()));
}

/** The flag of each protocol option (classify and eval), for messages. */
export const protocolFlag = (key: keyof ProtocolOptions): string =>
  ({ protocol: '--protocol', scales: '--scales', flip: '--flip', batchSize: '--batch' })[key];

/** `HxW` in pixels, as [h, w]. */
export function imageSize(value: string): [number, number] {
  const m = /^(\d+)x(\d+)$/i.exec(value);
  const [h, w] = m ? [Number(m[1]), Number(m[2])] : [0, 0];
  if (!(h > 0 && w > 0)) throw new InvalidArgumentError('Expected HxW in pixels, like 224x224.');
  return [h, w];
}

/** 138357544 -> "138,357,544": parameter counts are read by people. */
export const thousands = (n: number) => n.toLocaleString('en-US');

export interface EngineFlags {
  threads?: number;
  device?: string;
  precision?: string;
  winograd?: true;
  calibration?: string;
}

/** The options of every command that runs the network: where and how. */
export function engineOptions(command: Command): Command {
  return command
    .option('--threads <n>', 'oneDNN threads (default: all cores)', positiveInt)
    .option('--device <name>', "cpu, cuda or cuda:N (default: cpu)")
    .option('--precision <p>', 'fp32 (default); bf16 or int8 on the CPU; bf16 or fp16 on a GPU')
    .option('--winograd', 'CPU fp32: Winograd convolutions (faster, ~1e-4 relative error)')
    .option('--calibration <file>', 'int8: activation ranges from vgg calibrate');
}

type EngineSettings = Pick<LoadOptions, 'threads' | 'device' | 'precision' | 'winograd'> & { calibration?: string };

/** loadModel's options from those flags; loadModel checks the values and names the option. */
export function engineSettings(flags: EngineFlags): EngineSettings {
  const out: EngineSettings = {};
  if (flags.threads !== undefined) out.threads = flags.threads;
  if (flags.device !== undefined) out.device = flags.device as Device;
  if (flags.precision !== undefined) out.precision = flags.precision as Precision;
  if (flags.winograd) out.winograd = true;
  if (flags.calibration !== undefined) out.calibration = flags.calibration;
  return out;
}

/** `--crop`: a side in pixels, or 'none' for the whole resized image. */
function cropSize(value: string): number | false {
  if (value === 'none') return false;
  try {
    return positiveInt(value);
  } catch {
    throw new InvalidArgumentError("Expected a positive integer or 'none'.");
  }
}

/** How images become network input: --preset, --size and --crop (extract and job submit alike). */
export function preprocessOptions(command: Command): Command {
  return command
    .addOption(new Option('--preset <name>', "the preprocessing the weights were trained with (default: the weights' own, torchvision for most)").choices(PRESETS))
    .option('--size <n>', 'shorter side after resizing', positiveInt, 256)
    .option('--crop <n|none>', "side of the center crop, or 'none' for the whole resized image", cropSize, 224);
}

/** The tensor `key` of a .safetensors input file (--input, --key), as float32. */
export function readInput(file: string, key: string): Tensor {
  const st = readSafetensorsFile(file);
  const entry = st.tensors.get(key);
  if (!entry) {
    const present = [...st.tensors.keys()];
    throw new VggError('E_ARG', `${file} has no tensor ${JSON.stringify(key)} (--key); it has ${present.length ? present.join(', ') : 'no tensors'}`);
  }
  return { data: readF32(st, entry), shape: entry.shape };
}
