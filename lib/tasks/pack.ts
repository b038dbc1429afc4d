import type { Calibration } from '../weights/calibration';
import { VggError, argError, checkOptions, isInt } from '../errors';
import { checkLoadOptions, Engine, startEngine } from '../engine';
import { openWeights } from '../weights';
import { native, type Precision } from '../native';
import { writePacked, type PackedHeader } from '../weights/packed';
import type { Head } from '../arch/topology';

export interface PackOptions {
  /** 'fp32' (the default), 'bf16' or 'int8' (which needs `calibration`). */
  precision?: Precision;
  winograd?: boolean;
  calibration?: string | Calibration;
  /**
   * The input shapes [n, h, w, head] to choose layouts for; [[1, 224, 224, 'fixed'],
   * [8, 224, 224, 'fixed']] by default. Other shapes still run: their primitives convert the
   * packed layout when they want another (at a cost in memory and load time).
   */
  shapes?: [number, number, number, Head][];
  threads?: number;
}

export interface PackResult {
  bytes: number;
  layouts: number;
  header: Omit<PackedHeader, 'tensors'>;
}

const DEFAULT_SHAPES: [number, number, number, Head][] = [[1, 224, 224, 'fixed'], [8, 224, 224, 'fixed']];

/**
 * Writes `out`: the weights of `file` in the layouts this machine's oneDNN chooses, for the
 * precision given (int8: quantized with the calibration, which the file then carries).
 */
export async function packWeights(file: string, out: string, options?: PackOptions): Promise<PackResult> {
  const opts = checkOptions(options, 'options', ['precision', 'winograd', 'calibration', 'shapes', 'threads']);
  if (typeof out !== 'string' || out.length === 0) throw argError('out', 'an output file path', out);
  const shapes = opts.shapes ?? DEFAULT_SHAPES;
  if (!Array.isArray(shapes) || shapes.length === 0) throw argError('options.shapes', 'a non-empty list of [n, h, w, head]', shapes);
  for (const s of shapes) {
    const ok = Array.isArray(s) && s.length === 4 && s.slice(0, 3).every((v) => isInt(v)) && (s[3] === 'fixed' || s[3] === 'dense');
    if (!ok) throw argError('options.shapes', "shapes like [n, h, w, 'fixed' | 'dense']", s);
  }
  const weights = await openWeights(file);
  if (weights.packed) throw new VggError('E_ARG', `${file} is packed already; pack the original weights file`);
  if (weights.fc.length === 0) throw new VggError('E_ARG', `${file} has no classifier; vgg pack packs whole networks (load a features-only file as it is)`);
  const model = await startEngine(file, weights, checkLoadOptions({
    precision: opts.precision ?? 'fp32',
    winograd: opts.winograd, calibration: opts.calibration, threads: opts.threads,
  }), Engine);
  try {
    const layouts = await model.packLayouts(shapes);
    const { onednn, isa } = native().versions();
    const header: Omit<PackedHeader, 'tensors'> = {
      format: 'vggnet-packed', version: 2, onednn: onednn!, isa: isa!, precision: model.precision, winograd: model.winograd,
      arch: { arch: weights.arch.arch, batchNorm: weights.arch.batchNorm, cfg: weights.arch.cfg, fcHidden: weights.arch.fcHidden, classes: weights.arch.classes },
      naming: weights.naming, preset: weights.preset, shapes, ...(weights.classNames ? { classNames: weights.classNames } : {}), ...(model.calibration ? { calibration: model.calibration } : {}),
    };
    const bytesOf = (a: Float32Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
    const biases = [...weights.convs, ...weights.fc].map((p) => p.bias);
    const scales = new Map(layouts.filter((l) => l.scales).map((l) => [l.layer, l.scales!]));
    const bytes = await writePacked(out, header, [
      ...biases.map((b, layer) => ({ kind: 'bias' as const, layer, data: bytesOf(b) })),
      ...[...scales].map(([layer, s]) => ({ kind: 'scales' as const, layer, data: bytesOf(s) })),
      ...layouts.map((l) => ({ kind: 'weights' as const, layer: l.layer, data: l.data, layout: l.layout })),
    ]);
    return { bytes, layouts: layouts.length, header };
  } finally {
    await model.dispose();
  }
}
