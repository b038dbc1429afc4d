import { VggError } from '../errors';
import { FC6_WINDOW, featureLayers, lastWidth, type Arch, type ConvLayer } from '../arch/topology';
import type { FcLayerInit } from '../engine';
import { writeAtomicAsync } from '../files';
import { archMetadata, encodeSafetensors, type ModelWeights } from '../weights';
import { mulberry32 } from '../weights/random';
import type { Tensor } from '../tensor';
import type { TrainLayers } from './options';

/** The blob whose values the trained layers take: what is cached. */
export const INPUT_BLOB: Record<TrainLayers, string> = { fc8: 'fc7', 'fc7-fc8': 'fc6', 'fc6-fc8': 'pool5' };
/** The paper's initialisation of new layers: weights from N(0, σ²), biases 0. */
const INIT_SIGMA = 0.01;

/** What training starts from: the layers in order (given ones or new), and the width of fc6 and fc7. */
export interface Classifier { layers: FcLayerInit[]; hidden: number }

/**
 * The layers that learn, as the paper starts them: retrained fc6 and fc7 from the weights, a new
 * fc8 (and new fc6 and fc7 for weights without them, `fcHidden` wide) from N(0, 0.01²) with zero
 * biases, seeded. Asking for layers the weights lack is E_ARG, naming what to do instead.
 */
export function initialClassifier(weights: ModelWeights, layers: TrainLayers, classes: number, seed: number, fcHidden: number | undefined, source: string): Classifier {
  const { arch } = weights;
  if (weights.packed) throw new VggError('E_ARG', `${source} is a packed file, whose weights are in this machine's layouts: train from the .safetensors (or other file) it was packed from`);
  const notop = weights.fc.length === 0;
  if (notop && layers !== 'fc6-fc8') {
    throw new VggError('E_ARG', `--layers ${layers}: ${source} has no fc6 and fc7 (a features-only or notop file); train new ones with --layers fc6-fc8 --fc-hidden N`);
  }
  if (notop && fcHidden === undefined) throw new VggError('E_ARG', `--layers fc6-fc8: ${source} has no fc6 and fc7, so their width is needed: --fc-hidden N (4096 in the paper)`);
  if (!notop && fcHidden !== undefined) throw new VggError('E_ARG', `--fc-hidden ${fcHidden}: ${source} has fc6 and fc7 (${arch.fcHidden} wide), which are kept or retrained as they are`);
  const hidden = notop ? fcHidden! : arch.fcHidden;
  const random = gaussian(seed ^ 0x1417);
  const fresh = (outputs: number, inputs: number): FcLayerInit => {
    const weight = new Float32Array(outputs * inputs);
    for (let i = 0; i < weight.length; i++) weight[i] = INIT_SIGMA * random();
    return { weight, bias: new Float32Array(outputs) };
  };
  const given = (i: number): FcLayerInit => ({ weight: weights.fc[i]!.weight!, bias: weights.fc[i]!.bias });
  const fc8 = () => fresh(classes, hidden);
  if (layers === 'fc8') return { layers: [fc8()], hidden };
  if (layers === 'fc7-fc8') return { layers: [given(1), fc8()], hidden };
  if (notop) return { layers: [fresh(hidden, lastWidth(arch) * FC6_WINDOW * FC6_WINDOW), fresh(hidden, hidden), fc8()], hidden };
  return { layers: [given(0), given(1), fc8()], hidden };
}

/** Standard normal values from a seeded mulberry32 stream (Box-Muller). */
function gaussian(seed: number): () => number {
  const random = mulberry32(seed);
  const uniform = () => (random() + 1) / 4294967297; // (0, 1): log(0) is not a number
  return () => Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
}

export interface NewWeights {
  weights: ModelWeights;
  /** fc6, fc7, fc8 as trained (the frozen ones as the weights have them). */
  fc: FcLayerInit[];
  hidden: number;
  classes: string[];
  /** What `vgg info` and a person reading the metadata learn about the training. */
  provenance: Record<string, unknown>;
}

/**
 * Writes an ordinary torchvision safetensors file, atomically and off the event loop: every conv
 * of the input weights (batch norm folded in, so the file is the plain VGG that computes the
 * same), fc6, fc7 and fc8 as classifier.0, .3 and .6, and in `__metadata__` the architecture, the
 * preset of the input weights and the class names (`vgg.class_names`).
 */
export async function writeClassifier(file: string, w: NewWeights): Promise<void> {
  const arch: Arch = { ...w.weights.arch, batchNorm: false, fcHidden: w.hidden, classes: w.classes.length };
  const tensors: Record<string, Tensor> = {};
  const convs = featureLayers(arch).filter((l): l is ConvLayer => l.kind === 'conv');
  convs.forEach((l, i) => {
    tensors[`features.${l.feature}.weight`] = { data: w.weights.convs[i].weight!, shape: [l.outC, l.inC, l.kernel, l.kernel] };
    tensors[`features.${l.feature}.bias`] = { data: w.weights.convs[i].bias, shape: [l.outC] };
  });
  w.fc.forEach(({ weight, bias }, i) => {
    tensors[`classifier.${3 * i}.weight`] = { data: weight, shape: [bias.length, weight.length / bias.length] };
    tensors[`classifier.${3 * i}.bias`] = { data: bias, shape: [bias.length] };
  });
  const metadata = {
    ...archMetadata(arch, 'torchvision'), 'vgg.preset': w.weights.preset, 'vgg.class_names': JSON.stringify(w.classes),
    'vgg.trained': JSON.stringify(w.provenance),
  };
  await writeAtomicAsync(file, encodeSafetensors(tensors, metadata));
}
