import * as fs from 'node:fs';
import { argError, VggError } from '../errors';
import { featureLayers, hasClassifier, type Arch } from '../arch/topology';
import { native } from '../native';
import { bindWeights, type Naming } from './binding';
import { readContainer } from './containers';
import type { Preset } from './layers';
import { isPacked, readPacked, verifyPacked, type PackedWeights } from './packed';
import { parseSafetensors } from './safetensors';

/** One layer's parameters; a packed file's weight is null (the packed tensor replaces it). */
export interface LayerParams { weight: Float32Array | null; bias: Float32Array }

/** A weights file bound to its architecture; a packed file's weights are in `packed` instead. */
export interface ModelWeights {
  arch: Arch;
  naming: Naming;
  convs: LayerParams[];
  /** fc6, fc7, fc8; none for weights without a classifier. */
  fc: [LayerParams, LayerParams, LayerParams] | [];
  packed?: PackedWeights;
  /** The preprocessing the weights expect. */
  preset: Preset;
  /** What the file was: 'safetensors', 'packed', 'Caffe V1 caffemodel', 'Keras HDF5', 'ONNX model'... */
  container: string;
  /** The classes' names, where the file has them (weights from `vgg train`). */
  classNames?: string[];
}

/**
 * Maps a weights file (safetensors, or packed by `vgg pack`; Caffe, Keras, ONNX and PyTorch
 * files are converted as they are read) and binds it to its architecture,
 * validating every tensor, without starting an executor: what `loadModel` and `vgg info` share.
 */
export async function openWeights(file: string, options: { verify?: boolean } = {}): Promise<ModelWeights> {
  if (typeof file !== 'string' || file.length === 0) throw argError('path', 'a weights file path', file);
  let stat: fs.Stats;
  try {
    stat = await fs.promises.stat(file);
  } catch (e) {
    throw new VggError('E_IO', `cannot read weights file ${file}: ${(e as Error).message}`, { cause: e });
  }
  if (!stat.isFile()) throw new VggError('E_IO', `weights file ${file} is not a regular file`);
  if (stat.size < 8) throw new VggError('E_WEIGHTS_FORMAT', `${file}: not a valid safetensors file: file is ${stat.size} bytes, shorter than the 8-byte header length`);
  let mapped: ArrayBuffer;
  try {
    mapped = native().mapFile(file);
  } catch (e) {
    if (e instanceof VggError) throw e;
    throw new VggError('E_IO', `cannot map weights file ${file}: ${(e as Error).message}`, { cause: e });
  }
  const bytes = new Uint8Array(mapped);
  if (isPacked(bytes)) {
    const packed = readPacked(bytes, file);
    if (options.verify !== false) await verifyPacked(bytes, packed.header, file);
    const { arch, naming } = packed.header;
    const layer = (i: number) => ({ weight: null, bias: packed.biases[i] });
    const convs = featureLayers(arch).filter((l) => l.kind === 'conv').map((_, i) => layer(i));
    const fc: ModelWeights['fc'] = hasClassifier(arch) ? [layer(convs.length), layer(convs.length + 1), layer(convs.length + 2)] : [];
    const { preset = 'torchvision', classNames } = packed.header;
    return { arch, naming, convs, fc, packed, preset, container: 'packed', ...(classNames ? { classNames } : {}) };
  }
  const converted = await readContainer(file, bytes);
  if (converted) return { ...bindWeights({ source: file, ...converted }), container: converted.container };
  return { ...bindWeights(parseSafetensors(bytes, file)), container: 'safetensors' };
}
