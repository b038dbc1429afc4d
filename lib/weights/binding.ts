import { VggError } from '../errors';
import { readF32, type SafetensorsFile } from './safetensors';
import type { Tensor } from '../tensor';
import { PRESETS, type Preset } from './layers';
import {
  archLetter, BN_EPSILON, FC6_WINDOW, featureLayers, hasClassifier, lastWidth, validateArch,
  type Arch, type CfgItem, type ConvLayer,
} from '../arch/topology';

export type Naming = 'torchvision' | 'timm';

export interface Param { weight: Float32Array; bias: Float32Array }

/** A weights file bound to its architecture: what the native plan is built from. */
export interface BoundWeights {
  arch: Arch;
  naming: Naming;
  /** One per conv layer, in network order, with batch norm folded in. */
  convs: Param[];
  /** fc6 as [hidden, C*7*7] (CHW order), fc7 as [hidden, hidden], fc8 as [classes, hidden]; none without a classifier. */
  fc: [Param, Param, Param] | [];
  /** The preprocessing the weights expect: `vgg.preset` in the metadata, else torchvision's. */
  preset: Preset;
  /** The classes' names (`vgg.class_names`, a JSON list, as `vgg train` writes); absent when the file has none. */
  classNames?: string[];
}

/** Tensors already in memory (converted from another container), bound like a safetensors file. */
export interface TensorSet {
  source: string;
  metadata: Record<string, string>;
  tensors: Map<string, Tensor>;
}

const FLOAT_DTYPES = new Set(['F32', 'F16', 'BF16']);
const FC_KEYS: Record<Naming, [string, string, string]> = {
  torchvision: ['classifier.0', 'classifier.3', 'classifier.6'],
  timm: ['pre_logits.fc1', 'pre_logits.fc2', 'head.fc'],
};
/** Bookkeeping that BatchNorm checkpoints carry and inference ignores. */
const IGNORED = /\.num_batches_tracked$/;

const shapeText = (s: number[]) => `[${s.join(', ')}]`;
const sameShape = (a: number[], b: number[]) => a.length === b.length && a.every((v, i) => v === b[i]);

/** A weights file's tensor names, dtypes and shapes, without their data: enough to check it. */
export interface TensorShapes {
  source: string;
  metadata: Record<string, string>;
  tensors: Map<string, { dtype?: string; shape: number[] }>;
}

/**
 * The VGG a file's tensors describe: the architecture from `__metadata__` when the file has it,
 * otherwise inferred from the tensors; then every tensor checked against it. Reads no data, so a
 * converter can ask before it inflates anything.
 */
export function fitVgg(file: TensorShapes): { arch: Arch; naming: Naming } {
  const naming: Naming = file.tensors.has('pre_logits.fc1.weight') ? 'timm' : 'torchvision';
  const arch = file.metadata['vgg.cfg'] !== undefined ? archFromMetadata(file) : inferArch(file, naming);
  const expected = expectedTensors(arch, naming);
  const context = `VGG ${arch.arch}${arch.batchNorm ? ' with batch norm' : ''} (${naming} names)`;

  for (const [name, want] of expected) {
    const entry = file.tensors.get(name);
    if (!entry) throw new VggError('E_WEIGHTS_MISSING', `${file.source}: tensor ${name} is missing; ${context} needs it as ${want.role}, shape ${shapeText(want.shape)}`);
    if (entry.dtype !== undefined && !FLOAT_DTYPES.has(entry.dtype)) throw new VggError('E_WEIGHTS_FORMAT', `${file.source}: tensor ${name} is ${entry.dtype}, expected F32, F16 or BF16`);
    if (!sameShape(entry.shape, want.shape)) {
      throw new VggError('E_SHAPE', `${file.source}: tensor ${name} has shape ${shapeText(entry.shape)} but ${want.role} of ${context} needs ${shapeText(want.shape)}`);
    }
  }
  for (const name of file.tensors.keys()) {
    if (!expected.has(name) && !IGNORED.test(name)) {
      throw new VggError('E_WEIGHTS_EXTRA', `${file.source}: tensor ${name} is not part of ${context}`);
    }
  }
  return { arch, naming };
}

/** Binds a weights file to its VGG (fitVgg), batch norm folded into the convs. */
export function bindWeights(file: SafetensorsFile | TensorSet): BoundWeights {
  const preset = file.metadata['vgg.preset'] ?? 'torchvision';
  if (!PRESETS.includes(preset as Preset)) throw new VggError('E_WEIGHTS_FORMAT', `${file.source}: __metadata__ vgg.preset is ${JSON.stringify(preset)}, expected one of ${PRESETS.join(', ')}`);
  const { arch, naming } = fitVgg(file);
  const read = (name: string) => {
    const entry = file.tensors.get(name)!;
    return 'data' in entry ? entry.data : readF32(file as SafetensorsFile, entry);
  };
  const convs = featureLayers(arch).filter((l): l is ConvLayer => l.kind === 'conv').map((l) => {
    const weight = read(`features.${l.feature}.weight`);
    const bias = read(`features.${l.feature}.bias`);
    if (l.bn === undefined) return { weight, bias };
    const bn = (p: string) => read(`features.${l.bn}.${p}`);
    return foldBatchNorm(weight, bias, bn('weight'), bn('bias'), bn('running_mean'), bn('running_var'));
  });
  const fc = hasClassifier(arch) ? FC_KEYS[naming].map((k) => ({ weight: read(`${k}.weight`), bias: read(`${k}.bias`) })) as [Param, Param, Param] : [] as [];
  const classNames = readClassNames(file, arch.classes);
  return { arch, naming, convs, fc, preset: preset as Preset, ...(classNames ? { classNames } : {}) };
}

/** `vgg.class_names`: a JSON list of one distinct, non-empty name per class. */
function readClassNames(file: { source: string; metadata: Record<string, string> }, classes: number): string[] | undefined {
  const text = file.metadata['vgg.class_names'];
  if (text === undefined) return undefined;
  let names: unknown;
  try { names = JSON.parse(text); } catch { names = undefined; }
  const ok = Array.isArray(names) && names.length === classes && names.every((n) => typeof n === 'string' && n.length > 0)
    && new Set(names).size === names.length;
  if (!ok) throw new VggError('E_WEIGHTS_FORMAT', `${file.source}: __metadata__ vgg.class_names is not a JSON list of ${classes} distinct class names (one per class of fc8)`);
  return names as string[];
}

/**
 * y = gamma * (conv(x) + b - mean) / sqrt(var + eps) + beta, written as one conv:
 * the weights of output channel o scaled by gamma/sqrt(var + eps), the bias shifted to match.
 */
export function foldBatchNorm(weight: Float32Array, bias: Float32Array, gamma: Float32Array, beta: Float32Array,
  mean: Float32Array, variance: Float32Array): Param {
  const outC = bias.length;
  const perChannel = weight.length / outC;
  const w = new Float32Array(weight.length);
  const b = new Float32Array(outC);
  for (let o = 0; o < outC; o++) {
    const scale = gamma[o] / Math.sqrt(variance[o] + BN_EPSILON);
    for (let i = o * perChannel; i < (o + 1) * perChannel; i++) w[i] = weight[i] * scale;
    b[o] = (bias[o] - mean[o]) * scale + beta[o];
  }
  return { weight: w, bias: b };
}

interface Expected { shape: number[]; role: string }

function expectedTensors(arch: Arch, naming: Naming): Map<string, Expected> {
  const out = new Map<string, Expected>();
  for (const l of featureLayers(arch)) {
    if (l.kind !== 'conv') continue;
    out.set(`features.${l.feature}.weight`, { shape: [l.outC, l.inC, l.kernel, l.kernel], role: `the weights of ${l.name}` });
    out.set(`features.${l.feature}.bias`, { shape: [l.outC], role: `the bias of ${l.name}` });
    if (l.bn !== undefined) {
      for (const p of ['weight', 'bias', 'running_mean', 'running_var']) {
        out.set(`features.${l.bn}.${p}`, { shape: [l.outC], role: `the batch norm ${p} of ${l.name}` });
      }
    }
  }
  if (!hasClassifier(arch)) return out;
  const c = lastWidth(arch);
  const [k6, k7, k8] = FC_KEYS[naming];
  const timm = naming === 'timm';
  out.set(`${k6}.weight`, { shape: timm ? [arch.fcHidden, c, FC6_WINDOW, FC6_WINDOW] : [arch.fcHidden, c * FC6_WINDOW * FC6_WINDOW], role: 'the weights of fc6' });
  out.set(`${k6}.bias`, { shape: [arch.fcHidden], role: 'the bias of fc6' });
  out.set(`${k7}.weight`, { shape: timm ? [arch.fcHidden, arch.fcHidden, 1, 1] : [arch.fcHidden, arch.fcHidden], role: 'the weights of fc7' });
  out.set(`${k7}.bias`, { shape: [arch.fcHidden], role: 'the bias of fc7' });
  out.set(`${k8}.weight`, { shape: [arch.classes, arch.fcHidden], role: 'the weights of fc8' });
  out.set(`${k8}.bias`, { shape: [arch.classes], role: 'the bias of fc8' });
  return out;
}

/** The `vgg.*` metadata keys that make_fixtures.py and `vgg convert` write. */
export function archMetadata(arch: Arch, naming: Naming): Record<string, string> {
  return {
    'vgg.arch': arch.arch, 'vgg.batch_norm': String(arch.batchNorm), 'vgg.cfg': JSON.stringify(arch.cfg),
    'vgg.fc_hidden': String(arch.fcHidden), 'vgg.classes': String(arch.classes), 'vgg.naming': naming,
  };
}

/** Reads the architecture from the `vgg.*` metadata keys. */
function archFromMetadata(file: TensorShapes): Arch {
  const m = file.metadata;
  const bad = (key: string, expected: string) =>
    new VggError('E_WEIGHTS_FORMAT', `${file.source}: __metadata__ ${key} is ${JSON.stringify(m[key])}, expected ${expected}`);
  let cfg: unknown;
  try { cfg = JSON.parse(m['vgg.cfg']); } catch { throw bad('vgg.cfg', 'a JSON list like [64, "M", 128, "M", ...]'); }
  const int = (key: string) => {
    const v = Number(m[key]);
    if (!Number.isSafeInteger(v) || v < 0) throw bad(key, 'a positive integer (0 for weights without a classifier)');
    return v;
  };
  const bn = m['vgg.batch_norm'] ?? 'false';
  if (bn !== 'true' && bn !== 'false') throw bad('vgg.batch_norm', '"true" or "false"');
  const arch: Arch = { arch: 'custom', batchNorm: bn === 'true', cfg: cfg as CfgItem[], fcHidden: int('vgg.fc_hidden'), classes: int('vgg.classes') };
  try {
    validateArch(arch, `${file.source} __metadata__`);
  } catch (e) {
    throw new VggError('E_WEIGHTS_FORMAT', (e as Error).message);
  }
  arch.arch = archLetter(arch.cfg);
  return arch;
}

/**
 * Reads the architecture off the tensors. torchvision's `features` is a Sequential of conv,
 * [BN,] ReLU per conv, one slot per pool and per LRN, so the index gaps between convs tell
 * where the pools are: one spare slot is a pool, two are an LRN then a pool (as in A-LRN).
 */
function inferArch(file: TensorShapes, naming: Naming): Arch {
  const fail = (why: string) => new VggError('E_SHAPE', `${file.source}: the tensors fit no VGG: ${why}`);
  const convs: { index: number; shape: number[] }[] = [];
  for (const [name, e] of file.tensors) {
    const m = /^features\.(\d+)\.weight$/.exec(name);
    if (m && e.shape.length === 4) convs.push({ index: Number(m[1]), shape: e.shape });
  }
  if (convs.length === 0) {
    throw new VggError('E_WEIGHTS_MISSING', `${file.source}: no convolution weights (features.N.weight with 4 dimensions); is this a VGG checkpoint?`);
  }
  convs.sort((a, b) => a.index - b.index);
  const batchNorm = file.tensors.has(`features.${convs[0].index + 1}.running_mean`);
  const slots = batchNorm ? 3 : 2;

  const cfg: CfgItem[] = [];
  let next = 0;
  for (const { index, shape } of convs) {
    const spare = index - next;
    if (spare === 1) cfg.push('M');
    else if (spare === 2) cfg.push('L', 'M');
    else if (spare !== 0) throw fail(`features.${index} follows ${spare} layers without weights; a VGG has one pool (or an LRN and a pool) between blocks`);
    const [outC, , kh, kw] = shape;
    if (kh !== kw || (kh !== 3 && kh !== 1)) throw fail(`features.${index}.weight has shape ${shapeText(shape)}, expected a 3x3 or 1x1 kernel`);
    cfg.push(kh === 3 ? outC : ['1', outC]);
    next = index + slots;
  }
  cfg.push('M');

  const [k6, , k8] = FC_KEYS[naming];
  const fc6 = file.tensors.get(`${k6}.weight`);
  const fc8 = file.tensors.get(`${k8}.weight`);
  // A `features`-only state dict (no classifier tensors at all) is a feature extractor.
  const classifier = [...file.tensors.keys()].some((name) => !name.startsWith('features.'));
  if (!classifier) {
    const featuresOnly: Arch = { arch: archLetter(cfg), batchNorm, cfg, fcHidden: 0, classes: 0 };
    try {
      return validateArch(featuresOnly, `${file.source} (inferred from its tensors)`);
    } catch (e) {
      throw fail((e as Error).message);
    }
  }
  if (!fc6) throw new VggError('E_WEIGHTS_MISSING', `${file.source}: tensor ${k6}.weight (fc6) is missing`);
  if (!fc8) throw new VggError('E_WEIGHTS_MISSING', `${file.source}: tensor ${k8}.weight (fc8) is missing`);
  const arch: Arch = { arch: 'custom', batchNorm, cfg, fcHidden: fc6.shape[0], classes: fc8.shape[0] };
  try {
    validateArch(arch, `${file.source} (inferred from its tensors)`);
  } catch (e) {
    throw fail((e as Error).message);
  }
  arch.arch = archLetter(cfg);
  return arch;
}
