import { VggError } from '../errors';
import { archLetter, featureLayers, FC6_WINDOW, validateArch, BN_EPSILON, type Arch, type CfgItem, type ConvLayer } from '../arch/topology';
import type { Tensor } from '../tensor';

/** The preprocessing a weights file expects (see lib/images/preprocess.ts, which applies it). */
export type Preset = 'torchvision' | 'caffe';
export const PRESETS: readonly Preset[] = ['torchvision', 'caffe'];

/**
 * One layer of another framework's network, in the order data flows through it, with its
 * weights already in torchvision's layouts: conv [out, in, k, k], fc [out, in] with fc6's
 * inputs in C, H, W order. ReLU, dropout, flatten and softmax carry no weights and are left out.
 */
export type Layer =
  | { kind: 'conv'; name: string; weight: Tensor; bias: Float32Array | null }
  | { kind: 'bn'; name: string; mean: Float32Array; variance: Float32Array; gamma: Float32Array; beta: Float32Array; eps: number }
  | { kind: 'pool'; name: string }
  | { kind: 'lrn'; name: string }
  | { kind: 'fc'; name: string; weight: Tensor; bias: Float32Array | null };

/** A foreign file as torchvision tensors, with the `vgg.*` metadata `vgg convert` writes. */
export interface Converted {
  tensors: Map<string, Tensor>;
  metadata: Record<string, string>;
  /** Says which container was read, for `vgg info` ("Caffe V1 caffemodel"). */
  container: string;
}

const shapeText = (s: number[]) => `[${s.join(', ')}]`;

/**
 * Names a foreign network's layers as torchvision does. The architecture comes from the
 * structure alone (convs, pools and LRNs in order, then the fully connected layers), never
 * from the file's layer names, and every shape is checked against the layer before.
 */
export function toTorchvision(layers: Layer[], source: string, container: string, preset: Preset): Converted {
  const fail = (why: string) => new VggError('E_WEIGHTS_FORMAT', `${source} (${container}): ${why}`);
  const cfg: CfgItem[] = [];
  const convs: Extract<Layer, { kind: 'conv' }>[] = [];
  const norms: (Extract<Layer, { kind: 'bn' }> | undefined)[] = [];
  const fcs: Extract<Layer, { kind: 'fc' }>[] = [];
  let channels = 3;
  let previous: Layer | undefined;
  for (const l of layers) {
    if (fcs.length && l.kind !== 'fc') throw fail(`layer ${l.name} (${l.kind}) follows the fully connected layers; a VGG ends with them`);
    if (l.kind === 'conv') {
      const [outC, inC, kh, kw] = l.weight.shape;
      if (l.weight.shape.length !== 4 || kh !== kw || (kh !== 3 && kh !== 1)) throw fail(`convolution ${l.name} has weights ${shapeText(l.weight.shape)}, expected [out, in, 3, 3] or [out, in, 1, 1]`);
      if (inC !== channels) throw fail(`convolution ${l.name} takes ${inC} channels but the layer before gives ${channels}`);
      if (l.bias && l.bias.length !== outC) throw fail(`convolution ${l.name} has ${l.bias.length} biases for ${outC} outputs`);
      cfg.push(kh === 3 ? outC : ['1', outC]);
      convs.push(l);
      norms.push(undefined);
      channels = outC;
    } else if (l.kind === 'bn') {
      if (previous?.kind !== 'conv') throw fail(`batch norm ${l.name} does not follow a convolution; vggnet folds batch norm into the convolution before it`);
      for (const p of [l.mean, l.variance, l.gamma, l.beta]) if (p.length !== channels) throw fail(`batch norm ${l.name} has ${p.length} values per parameter for ${channels} channels`);
      norms[norms.length - 1] = l;
    } else if (l.kind === 'pool') {
      cfg.push('M');
    } else if (l.kind === 'lrn') {
      cfg.push('L');
    } else {
      fcs.push(l);
    }
    previous = l;
  }
  if (convs.length === 0) throw fail('no convolution layers: not a VGG');
  const batchNorm = norms.some((n) => n !== undefined);
  if (batchNorm && norms.some((n) => n === undefined)) throw fail('batch norm follows some convolutions but not others; a VGG has it after every one or none');
  if (cfg[cfg.length - 1] !== 'M') throw fail(`the last convolution ${convs[convs.length - 1].name} is not followed by a max pool (pool5)`);
  if (fcs.length !== 3 && fcs.length !== 0) throw fail(`${fcs.length} fully connected layers (${fcs.map((f) => f.name).join(', ')}), expected 3 (fc6, fc7, fc8), or none in a file without the classifier`);

  // No fully connected layers (Keras notop): a feature extractor, with 0 classes.
  const [fc6, fc7, fc8] = fcs.length ? fcs : [undefined, undefined, undefined];
  const hidden = fc6?.weight.shape[0] ?? 0;
  const fcInputs = [channels * FC6_WINDOW * FC6_WINDOW, hidden, hidden];
  fcs.forEach((f, i) => {
    const [out, inF] = f.weight.shape;
    if (f.weight.shape.length !== 2 || inF !== fcInputs[i]) throw fail(`fully connected ${f.name} has weights ${shapeText(f.weight.shape)}, expected [out, ${fcInputs[i]}]`);
    if (f.bias && f.bias.length !== out) throw fail(`fully connected ${f.name} has ${f.bias.length} biases for ${out} outputs`);
  });
  if (fc7 && fc7.weight.shape[0] !== hidden) throw fail(`fc6 has ${hidden} outputs but ${fc7.name} has ${fc7.weight.shape[0]}; VGG's fc6 and fc7 are as wide`);
  const arch: Arch = { arch: archLetter(cfg), batchNorm, cfg, fcHidden: hidden, classes: fc8?.weight.shape[0] ?? 0 };
  try {
    validateArch(arch, `${source} (${container})`);
  } catch (e) {
    throw fail((e as Error).message);
  }

  const tensors = new Map<string, Tensor>();
  const vector = (data: Float32Array) => ({ data, shape: [data.length] });
  const bias = (b: Float32Array | null, n: number) => vector(b ?? new Float32Array(n));
  featureLayers(arch).filter((l): l is ConvLayer => l.kind === 'conv').forEach((l, i) => {
    tensors.set(`features.${l.feature}.weight`, convs[i].weight);
    tensors.set(`features.${l.feature}.bias`, bias(convs[i].bias, l.outC));
    const bn = norms[i];
    if (bn && l.bn !== undefined) {
      tensors.set(`features.${l.bn}.weight`, vector(bn.gamma));
      tensors.set(`features.${l.bn}.bias`, vector(bn.beta));
      tensors.set(`features.${l.bn}.running_mean`, vector(bn.mean));
      // torchvision's epsilon is fixed; another one is folded into the variance, to the same effect.
      const variance = bn.eps === BN_EPSILON ? bn.variance : bn.variance.map((v) => v + bn.eps - BN_EPSILON);
      tensors.set(`features.${l.bn}.running_var`, vector(variance));
    }
  });
  fcs.forEach((f, i) => {
    tensors.set(`classifier.${3 * i}.weight`, f.weight);
    tensors.set(`classifier.${3 * i}.bias`, bias(f.bias, f.weight.shape[0]));
  });
  return { tensors, metadata: { 'vgg.preset': preset, 'vgg.container': container }, container };
}

/** float32 values from little-endian bytes: a view when aligned, else a copy. */
export function floatsOf(bytes: Uint8Array): Float32Array {
  if (bytes.length % 4 !== 0) throw new RangeError(`${bytes.length} bytes are not a whole number of float32 values`);
  if (bytes.byteOffset % 4 === 0) return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4);
  return new Float32Array(bytes.slice().buffer);
}

/** float64 values from little-endian bytes, narrowed to float32. */
export function narrowDoubles(bytes: Uint8Array): Float32Array {
  if (bytes.length % 8 !== 0) throw new RangeError(`${bytes.length} bytes are not a whole number of float64 values`);
  const copy = bytes.byteOffset % 8 === 0 ? bytes : bytes.slice();
  return new Float32Array(new Float64Array(copy.buffer, copy.byteOffset, copy.length / 8));
}

/** Elements of a shape, refusing negative, fractional or absurd dimensions before anything is allocated. */
export function elementCount(shape: number[], what: string, fail: (why: string) => Error): number {
  let n = 1;
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0) throw fail(`${what} has shape ${shapeText(shape)}, expected non-negative integer dimensions`);
    n *= d;
  }
  if (!Number.isSafeInteger(n)) throw fail(`${what} has shape ${shapeText(shape)}, too many elements`);
  return n;
}

/** A [rows, cols] matrix as [cols, rows]. */
export function transpose2d(t: Tensor): Tensor {
  const [rows, cols] = t.shape;
  const out = new Float32Array(t.data.length);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) out[c * rows + r] = t.data[r * cols + c];
  }
  return { data: out, shape: [cols, rows] };
}
