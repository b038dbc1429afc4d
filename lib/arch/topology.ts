import { VggError, argError } from '../errors';

/**
 * One entry of a torchvision-style `cfgs` list: a 3x3 conv's width, 'M' for the 2x2/2 max-pool,
 * 'L' for LRN, or ['1', width] for config C's 1x1 conv.
 */
export type CfgItem = number | 'M' | 'L' | ['1', number];
export type Head = 'fixed' | 'dense';

export interface Arch {
  /** Paper config letter (A, A-LRN, B, C, D, E) or 'custom'. */
  arch: string;
  batchNorm: boolean;
  cfg: CfgItem[];
  /** 0 with classes 0: weights without a classifier (Keras notop), a feature extractor up to pool5. */
  fcHidden: number;
  classes: number;
}

/** Whether the weights have the classifier (fc6, fc7, fc8); without it only the feature blobs exist. */
export const hasClassifier = (a: Arch) => a.classes > 0;

/** The E_ARG for asking weights without a classifier for what only the classifier computes. */
export function noClassifier(what: string): VggError {
  return new VggError('E_ARG', `${what}: the weights have no classifier (fc6, fc7, fc8: a notop or features-only file), so the blobs end at pool5`);
}

/** The VGG paper's Table 1. */
export const PRESET_CFGS: Record<string, CfgItem[]> = {
  A: [64, 'M', 128, 'M', 256, 256, 'M', 512, 512, 'M', 512, 512, 'M'],
  'A-LRN': [64, 'L', 'M', 128, 'M', 256, 256, 'M', 512, 512, 'M', 512, 512, 'M'],
  B: [64, 64, 'M', 128, 128, 'M', 256, 256, 'M', 512, 512, 'M', 512, 512, 'M'],
  C: [64, 64, 'M', 128, 128, 'M', 256, 256, ['1', 256], 'M', 512, 512, ['1', 512], 'M', 512, 512, ['1', 512], 'M'],
  D: [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512, 'M'],
  E: [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 256, 'M', 512, 512, 512, 512, 'M', 512, 512, 512, 512, 'M'],
};
const TORCHVISION: Record<string, string> = { vgg11: 'A', vgg13: 'B', vgg16: 'D', vgg19: 'E' };

export const LRN = { size: 5, alpha: 1e-4, beta: 0.75, k: 2 } as const;
export const BN_EPSILON = 1e-5; // torchvision's BatchNorm2d default
/** The fixed head pools pool5 to this size; the dense head's fc6 is a conv of this kernel. */
export const FC6_WINDOW = 7;

/**
 * A preset by paper letter (`D`, `A-LRN`), torchvision name (`vgg16`, `vgg16_bn`) or
 * letter with `-bn` (`D-bn`).
 */
export function presetArch(name: string): Arch {
  if (typeof name !== 'string') throw argError('arch', 'a preset name such as D or vgg16_bn', name);
  const bn = /(_|-)bn$/.test(name);
  const base = name.replace(/(_|-)bn$/, '');
  const letter = Object.hasOwn(TORCHVISION, base) ? TORCHVISION[base] : base.toUpperCase();
  if (!Object.hasOwn(PRESET_CFGS, letter) || (bn && letter === 'A-LRN')) {
    throw argError('arch', `one of A, A-LRN, B, C, D, E, vgg11, vgg13, vgg16, vgg19 (optionally with _bn)`, name);
  }
  return { arch: letter, batchNorm: bn, cfg: PRESET_CFGS[letter], fcHidden: 4096, classes: 1000 };
}

/** The paper letter whose layer pattern (ignoring widths) this cfg follows, or 'custom'. */
export function archLetter(cfg: CfgItem[]): string {
  const pattern = (c: CfgItem[]) => c.map((v) => (typeof v === 'number' ? 'c' : Array.isArray(v) ? '1' : v)).join('');
  const p = pattern(cfg);
  return Object.keys(PRESET_CFGS).find((k) => pattern(PRESET_CFGS[k]) === p) ?? 'custom';
}

const isWidth = (v: unknown) => Number.isSafeInteger(v) && (v as number) > 0;

/** Checks a user- or file-supplied architecture; `what` names where it came from. */
export function validateArch(a: Arch, what = 'arch'): Arch {
  const fail = (expected: string, value: unknown) => { throw argError(what, expected, value); };
  if (!Array.isArray(a.cfg) || a.cfg.length === 0) fail('a non-empty cfg list', a.cfg);
  a.cfg.forEach((v, i) => {
    const ok = isWidth(v) || v === 'M' || v === 'L' || (Array.isArray(v) && v.length === 2 && v[0] === '1' && isWidth(v[1]));
    if (!ok) fail(`cfg[${i}] to be a positive width, 'M', 'L' or ['1', width]`, v);
  });
  if (!a.cfg.some((v) => typeof v === 'number' || Array.isArray(v))) fail('a cfg with at least one convolution', a.cfg);
  if (a.cfg[a.cfg.length - 1] !== 'M') fail(`a cfg that ends with 'M' (pool5 feeds the classifier)`, a.cfg);
  const featuresOnly = a.fcHidden === 0 && a.classes === 0;
  if (!isWidth(a.fcHidden) && !featuresOnly) fail('a positive integer fcHidden (or 0 with 0 classes: no classifier)', a.fcHidden);
  if (!isWidth(a.classes) && !featuresOnly) fail('a positive integer classes (or 0 with fcHidden 0: no classifier)', a.classes);
  if (typeof a.batchNorm !== 'boolean') fail('a boolean batchNorm', a.batchNorm);
  return a;
}

export interface ConvLayer { kind: 'conv'; name: string; kernel: 3 | 1; inC: number; outC: number; feature: number; bn?: number }
export interface PoolLayer { kind: 'pool'; name: string }
export interface LrnLayer { kind: 'lrn'; name: string }
export type FeatureLayer = ConvLayer | PoolLayer | LrnLayer;

/**
 * The feature layers with their Caffe blob names and their torchvision `features.N` indices
 * (conv, then BN if any, then ReLU; one index each for LRN and pool).
 */
export function featureLayers(a: Arch): FeatureLayer[] {
  const out: FeatureLayer[] = [];
  let block = 1, k = 1, index = 0, c = 3;
  for (const v of a.cfg) {
    if (v === 'M') {
      out.push({ kind: 'pool', name: `pool${block}` });
      block++; k = 1; index++;
    } else if (v === 'L') {
      out.push({ kind: 'lrn', name: `norm${block}` });
      index++;
    } else {
      const [kernel, outC] = Array.isArray(v) ? [1 as const, v[1]] : [3 as const, v];
      out.push({ kind: 'conv', name: `conv${block}_${k++}`, kernel, inC: c, outC, feature: index, bn: a.batchNorm ? index + 1 : undefined });
      index += a.batchNorm ? 3 : 2;
      c = outC;
    }
  }
  return out;
}

export const lastWidth = (a: Arch) => (featureLayers(a).filter((l) => l.kind === 'conv').pop() as ConvLayer).outC;

export interface Blob { name: string; shape: number[] }

export const HEAD_BLOBS: Record<Head, string[]> = {
  fixed: ['fc6', 'fc7', 'fc8', 'prob'],
  dense: ['fc6', 'fc7', 'fc8_map', 'fc8', 'prob'],
};

/** Every blob's shape for an input of [n, 3, h, w], in the order the network computes them. */
export function inferShapes(a: Arch, n: number, h: number, w: number, head: Head): Blob[] {
  const blobs: Blob[] = [];
  let c = 3;
  for (const l of featureLayers(a)) {
    if (l.kind === 'pool') {
      if (h < 2 || w < 2) {
        throw new VggError('E_SHAPE', `input is too small: ${l.name} would pool a ${h}x${w} map (each pool halves the size; ${a.cfg.filter((v) => v === 'M').length} pools need at least ${2 ** a.cfg.filter((v) => v === 'M').length}x${2 ** a.cfg.filter((v) => v === 'M').length})`);
      }
      h = Math.floor(h / 2); w = Math.floor(w / 2);
    } else if (l.kind === 'conv') {
      c = l.outC;
    }
    blobs.push({ name: l.name, shape: [n, c, h, w] });
  }
  if (!hasClassifier(a)) {
    if (head === 'dense') throw noClassifier('the dense head');
    return blobs;
  }
  if (head === 'fixed') {
    blobs.push({ name: 'fc6', shape: [n, a.fcHidden] }, { name: 'fc7', shape: [n, a.fcHidden] });
    blobs.push({ name: 'fc8', shape: [n, a.classes] }, { name: 'prob', shape: [n, a.classes] });
  } else {
    if (h < FC6_WINDOW || w < FC6_WINDOW) {
      const min = FC6_WINDOW * 2 ** a.cfg.filter((v) => v === 'M').length;
      throw new VggError('E_SHAPE', `input is too small for the dense head: pool5 is ${h}x${w} but fc6 is a ${FC6_WINDOW}x${FC6_WINDOW} convolution (inputs need at least ${min}x${min})`);
    }
    const [mh, mw] = [h - FC6_WINDOW + 1, w - FC6_WINDOW + 1];
    blobs.push({ name: 'fc6', shape: [n, a.fcHidden, mh, mw] }, { name: 'fc7', shape: [n, a.fcHidden, mh, mw] });
    blobs.push({ name: 'fc8_map', shape: [n, a.classes, mh, mw] });
    blobs.push({ name: 'fc8', shape: [n, a.classes] }, { name: 'prob', shape: [n, a.classes] });
  }
  return blobs;
}

/** The names of every blob this architecture has, in network order. */
export function blobNames(a: Arch, head: Head): string[] {
  return [...featureLayers(a).map((l) => l.name), ...(hasClassifier(a) ? HEAD_BLOBS[head] : [])];
}

export interface LayerRow {
  name: string;
  type: 'conv' | 'maxpool' | 'lrn' | 'avgpool' | 'fc' | 'softmax';
  kernel: string;
  stride: number;
  padding: number;
  shape: number[];
  params: number;
  macs: number;
}

/** The per-layer table of the fixed head for one image of h x w: what `vgg info` prints. */
export function layerTable(a: Arch, h = 224, w = 224): LayerRow[] {
  const blobs = inferShapes(a, 1, h, w, 'fixed');
  const rows: LayerRow[] = [];
  featureLayers(a).forEach((l, i) => {
    const shape = blobs[i].shape.slice(1);
    if (l.kind === 'conv') {
      const params = l.outC * l.inC * l.kernel * l.kernel + l.outC + (a.batchNorm ? 2 * l.outC : 0);
      const macs = l.outC * l.inC * l.kernel * l.kernel * shape[1] * shape[2];
      rows.push({ name: l.name, type: 'conv', kernel: `${l.kernel}x${l.kernel}`, stride: 1, padding: l.kernel === 3 ? 1 : 0, shape, params, macs });
    } else if (l.kind === 'pool') {
      rows.push({ name: l.name, type: 'maxpool', kernel: '2x2', stride: 2, padding: 0, shape, params: 0, macs: 0 });
    } else {
      rows.push({ name: l.name, type: 'lrn', kernel: `${LRN.size}`, stride: 1, padding: 0, shape, params: 0, macs: 0 });
    }
  });
  if (!hasClassifier(a)) return rows;
  const c = lastWidth(a);
  const fc = (name: string, inF: number, outF: number): LayerRow =>
    ({ name, type: 'fc', kernel: '-', stride: 1, padding: 0, shape: [outF], params: inF * outF + outF, macs: inF * outF });
  rows.push({ name: 'avgpool', type: 'avgpool', kernel: 'adaptive', stride: 1, padding: 0, shape: [c, FC6_WINDOW, FC6_WINDOW], params: 0, macs: 0 });
  rows.push(fc('fc6', c * FC6_WINDOW * FC6_WINDOW, a.fcHidden), fc('fc7', a.fcHidden, a.fcHidden), fc('fc8', a.fcHidden, a.classes));
  rows.push({ name: 'prob', type: 'softmax', kernel: '-', stride: 1, padding: 0, shape: [a.classes], params: 0, macs: 0 });
  return rows;
}

/** Learned parameters, counted as torchvision does (BN's weight and bias, not its running statistics). */
export const countParams = (a: Arch) => layerTable(a, 224, 224).reduce((s, r) => s + r.params, 0);
/** Multiply-accumulates of one image through the fixed head. */
export const countMacs = (a: Arch, h = 224, w = 224) => layerTable(a, h, w).reduce((s, r) => s + r.macs, 0);
