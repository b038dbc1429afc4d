import { VggError, argError, describe } from '../errors';
import type { Tensor } from '../tensor';
import { featureLayers, type Arch, type CfgItem } from '../arch/topology';
import { readRegularFile, writeAtomic } from '../files';

/**
 * Activation ranges for int8: the largest value each quantized layer produced on a calibration
 * set, measured in float32. Every activation int8 stores is after a ReLU (or an LRN of one), so
 * it is non-negative and maps onto u8 as round(x * 255 / max).
 */
export interface Calibration {
  format: 'vggnet-calibration';
  version: 1;
  arch: string;
  cfg: CfgItem[];
  /** How many images the ranges were measured on. */
  images: number;
  /** Blob name -> largest value: every conv and LRN output, fc6 and fc7. */
  max: Record<string, number>;
}

/** The blobs whose ranges int8 needs, in network order. */
export function calibratedBlobs(arch: Arch): string[] {
  return [...featureLayers(arch).filter((l) => l.kind !== 'pool').map((l) => l.name), 'fc6', 'fc7'];
}

/** Running maxima over the batches a model produces; `result()` is the calibration file's content. */
export class RangeTracker {
  readonly blobs: string[];
  #max = new Map<string, number>();
  #images = 0;

  constructor(private readonly arch: Arch) {
    this.blobs = calibratedBlobs(arch);
  }

  /**
   * Takes a batch's blobs into the maxima. A VGG16 batch is a few hundred million values, so the
   * scan yields to the event loop every few million.
   */
  async add(outputs: Record<string, Tensor>): Promise<void> {
    const STEP = 1 << 22;
    for (const name of this.blobs) {
      const data = outputs[name].data;
      let m = this.#max.get(name) ?? 0;
      for (let start = 0; start < data.length; start += STEP) {
        const end = Math.min(start + STEP, data.length);
        for (let i = start; i < end; i++) if (data[i] > m) m = data[i];
        if (end < data.length) await new Promise((resolve) => setImmediate(resolve));
      }
      this.#max.set(name, m);
    }
    this.#images += outputs[this.blobs[0]].shape[0];
  }

  result(): Calibration {
    if (this.#images === 0) throw new VggError('E_ARG', 'calibration saw no images; give it at least one');
    const max: Record<string, number> = {};
    for (const name of this.blobs) {
      const m = this.#max.get(name)!;
      // A layer that never fired (all zeros) would give a zero scale; any positive range works for it.
      max[name] = m > 0 ? m : 1;
    }
    return { format: 'vggnet-calibration', version: 1, arch: this.arch.arch, cfg: this.arch.cfg, images: this.#images, max };
  }
}

export function writeCalibration(file: string, calibration: Calibration): void {
  // One line for the cfg, one per range: a file people read and diff.
  const text = JSON.stringify({ ...calibration, cfg: '\0' }, null, 2).replace('"\\u0000"', JSON.stringify(calibration.cfg));
  writeAtomic(file, (out) => out.write(`${text}\n`));
}

/**
 * A calibration for this architecture from a file path or an object (what `vgg calibrate`
 * wrote), checked: the same layers, and a positive finite range for each.
 */
export function loadCalibration(source: unknown, arch: Arch): Calibration {
  let value = source;
  const name = typeof source === 'string' ? source : 'options.calibration';
  if (typeof source === 'string') {
    // A calibration is a few kilobytes of JSON.
    const text = readRegularFile(source, 'calibration file', 1 << 24).toString('utf8');
    try {
      value = JSON.parse(text);
    } catch (e) {
      throw new VggError('E_ARG', `calibration file ${source} is not JSON: ${(e as Error).message}`, { cause: e });
    }
  } else if (typeof source !== 'object' || source === null) {
    throw argError('options.calibration', 'a calibration file path or the object vgg calibrate writes', source);
  }
  const c = value as Partial<Calibration>;
  if (c.format !== 'vggnet-calibration' || c.version !== 1 || typeof c.max !== 'object' || c.max === null) {
    throw new VggError('E_ARG', `${name} is not a vggnet calibration (expected format "vggnet-calibration", version 1, and max ranges)`);
  }
  if (JSON.stringify(c.cfg) !== JSON.stringify(arch.cfg)) {
    throw new VggError('E_ARG', `${name} was made for a VGG with cfg ${JSON.stringify(c.cfg)}, not this model's ${JSON.stringify(arch.cfg)}`);
  }
  let previous: [string, number] | undefined;
  for (const blob of calibratedBlobs(arch)) {
    const m = (c.max as Record<string, unknown>)[blob];
    if (typeof m !== 'number' || !Number.isFinite(m) || m <= 0) {
      throw new VggError('E_ARG', `${name}: expected a positive range for ${blob} but received ${describe(m)}`);
    }
    if (m < MIN_RANGE || m > MAX_RANGE) {
      throw new VggError('E_ARG', `${name}: the range of ${blob}, ${m}, is outside ${MIN_RANGE} to ${MAX_RANGE}, where float32 int8 scales (255 / range) hold it; calibrate again on real images`);
    }
    // A layer requantizes by its input's range over its output's (times a weight scale): that too must stay well inside float32.
    if (previous && (previous[1] / m < MIN_RANGE || previous[1] / m > MAX_RANGE)) {
      throw new VggError('E_ARG', `${name}: the ranges of ${previous[0]} (${previous[1]}) and ${blob} (${m}) differ by more than float32 int8 scales can multiply (a factor of ${MAX_RANGE}); calibrate again on real images`);
    }
    previous = [blob, m];
  }
  return c as Calibration;
}

/**
 * The ranges int8 accepts: 255 / range and the ratio of two of them, times a weight scale, must be
 * normal float32 numbers (1e-38 to 3e38) with room to spare.
 */
const MIN_RANGE = 1e-30;
const MAX_RANGE = 1e30;

/** u8 scale of a blob: stored value = real value * scale. */
export const outScale = (calibration: Calibration, blob: string) => 255 / calibration.max[blob];
