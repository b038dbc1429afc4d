import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { VggError } from '../errors';
import { mulberry32 } from './random';
import { encodeHeader } from './safetensors';
import { FC6_WINDOW, featureLayers, lastWidth, presetArch } from '../arch/topology';
import { archMetadata } from './binding';

/**
 * Where downloaded and generated weights live: `VGGNET_CACHE`, else `$XDG_CACHE_HOME/vggnet`,
 * else `~/.cache/vggnet`.
 */
export function cacheDir(): string {
  const env = process.env;
  if (env.VGGNET_CACHE) return env.VGGNET_CACHE;
  return path.join(env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'vggnet');
}

export interface DefaultWeightsOptions {
  /** Overrides cacheDir(). */
  cacheDir?: string;
  /** Leaves out the stderr notice that the weights are random. */
  quiet?: boolean;
}

/** A generation writes its temp file in seconds; one untouched this long was left by a killed process. */
const ABANDONED_MS = 10 * 60 * 1000;

/** Changing the seed or the generator below changes the weights, so the seed names the file. */
const SEED = 0;
const NOTICE = 'vgg: no --weights given: using VGG16 with seeded random weights (features are meaningless; `vgg fetch vgg16` downloads real ones)\n';
/** Elements generated and written at a time: the whole file (553 MB) is never in memory. */
const CHUNK = 1 << 20;

/**
 * A full-size VGG16 (config D, torchvision names, 1000 classes) with seeded random weights, so
 * that commands run without a download: the outputs are finite and vary with the input, but mean
 * nothing. Generated once into the cache (a few seconds), then returned at once.
 */
export async function defaultWeights(options: DefaultWeightsOptions = {}): Promise<string> {
  if (!options.quiet) process.stderr.write(NOTICE);
  const dir = options.cacheDir ?? cacheDir();
  const file = path.join(dir, `vgg16-random-seed${SEED}.safetensors`);
  const tensors = vgg16Tensors();
  const header = encodeHeader(tensors.map((t): [string, number[]] => [t.name, t.shape]), archMetadata(presetArch('vgg16'), 'torchvision'));
  const size = header.length + tensors.reduce((s, t) => s + 4 * t.count, 0);
  // A file of the right size was renamed into place complete: a partial one never has this name.
  if ((await fs.promises.stat(file).catch(() => undefined))?.size === size) return file;

  if (!options.quiet) process.stderr.write(`vgg: writing them once to ${file} (${Math.round(size / 1e6)} MB; VGGNET_CACHE chooses the folder)\n`);
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.tmp`);
  const ioError = (e: unknown) => new VggError('E_IO', `cannot write default weights to ${file}: `
    + `${(e as NodeJS.ErrnoException).code ?? (e as Error).message}; set VGGNET_CACHE to a folder you can write, or pass --weights`, { cause: e });
  await fs.promises.mkdir(dir, { recursive: true }).catch((e) => { throw ioError(e); });
  await removeAbandoned(dir, path.basename(file));
  try {
    const out = await fs.promises.open(tmp, 'w');
    try {
      await out.write(header);
      await writeRandomData(out, tensors);
    } finally {
      await out.close();
    }
    await fs.promises.rename(tmp, file);
  } catch (e) {
    await fs.promises.rm(tmp, { force: true });
    throw ioError(e);
  }
  return file;
}

interface TensorSpec { name: string; shape: number[]; count: number; std: number }

/** Each tensor's seeded samples, in order, a chunk at a time. */
async function writeRandomData(out: fs.promises.FileHandle, tensors: TensorSpec[]): Promise<void> {
  const random = mulberry32(SEED);
  // Two buffers, so that one is written (on libuv's thread pool) while the next is filled.
  const buffers = [new Float32Array(CHUNK), new Float32Array(CHUNK)];
  let writing: Promise<unknown> = Promise.resolve();
  let chunks = 0;
  for (const t of tensors) {
    for (let done = 0; done < t.count; done += CHUNK) {
      const part = buffers[chunks++ % 2].subarray(0, Math.min(CHUNK, t.count - done));
      if (t.std === 0) part.fill(0);
      else fillNormalish(part, t.std, random);
      await writing;
      writing = out.write(part);
    }
  }
  await writing;
}

/**
 * torchvision's VGG16 state_dict in order, with the scale of torchvision's own initialisation:
 * convs kaiming-normal over fan_out (std sqrt(2 / (out * k * k))), linear layers N(0, 0.01),
 * biases zero. That keeps activations in a sane range through all 16 layers.
 */
function vgg16Tensors(): TensorSpec[] {
  const arch = presetArch('vgg16');
  const specs: TensorSpec[] = [];
  const add = (name: string, shape: number[], std: number) => specs.push({ name, shape, count: shape.reduce((a, b) => a * b, 1), std });
  for (const l of featureLayers(arch)) {
    if (l.kind !== 'conv') continue;
    add(`features.${l.feature}.weight`, [l.outC, l.inC, l.kernel, l.kernel], Math.sqrt(2 / (l.outC * l.kernel * l.kernel)));
    add(`features.${l.feature}.bias`, [l.outC], 0);
  }
  const widths = [lastWidth(arch) * FC6_WINDOW * FC6_WINDOW, arch.fcHidden, arch.fcHidden, arch.classes];
  ['classifier.0', 'classifier.3', 'classifier.6'].forEach((name, i) => {
    add(`${name}.weight`, [widths[i + 1], widths[i]], 0.01);
    add(`${name}.bias`, [widths[i + 1]], 0);
  });
  return specs;
}

/**
 * Fills `out` with N(0, std^2)-like samples: the sum of four 16-bit uniforms (Irwin-Hall), scaled
 * to the std. Its bell is close to a normal's (tails end at 3.5 std) and it is three times faster
 * than Box-Muller, which matters for 138 million values.
 */
function fillNormalish(out: Float32Array, std: number, random: () => number): void {
  // Four uniforms on [0, 65535] sum to mean 131070 and std 65536 / sqrt(3) (to 1 part in 10^9).
  const scale = (std * Math.sqrt(3)) / 65536;
  for (let i = 0; i < out.length; i++) {
    const a = random();
    const b = random();
    out[i] = ((a & 0xffff) + (a >>> 16) + (b & 0xffff) + (b >>> 16) - 131070) * scale;
  }
}

/** Deletes temp files of this name that a killed generation left behind (553 MB each). */
async function removeAbandoned(dir: string, name: string): Promise<void> {
  const prefix = `.${name}.`;
  for (const entry of await fs.promises.readdir(dir).catch(() => [] as string[])) {
    if (!entry.startsWith(prefix) || !entry.endsWith('.tmp')) continue;
    const at = path.join(dir, entry);
    const stat = await fs.promises.stat(at).catch(() => undefined);
    if (stat && Date.now() - stat.mtimeMs > ABANDONED_MS) await fs.promises.rm(at, { force: true });
  }
}
