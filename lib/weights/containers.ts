import * as fs from 'node:fs';
import { VggError } from '../errors';
import { fitVgg } from './binding';
import { native } from '../native';
import type { Converted } from './layers';
import { HDF5_SIGNATURE } from './keras';

/**
 * Recognises a weights file by its content and converts the containers other than
 * safetensors (and packed files) to torchvision tensors: Caffe caffemodel (V1 and V2), Keras
 * HDF5, ONNX and PyTorch zip checkpoints. Undefined means safetensors, or nothing known: the
 * safetensors parser then says what is wrong. Each reader is loaded only when its container is met.
 */
export async function readContainer(file: string, bytes: Uint8Array): Promise<Converted | undefined> {
  if (HDF5_SIGNATURE.every((b, i) => bytes[i] === b)) return (await import('./keras-thread')).convertKerasOffThread(file, bytes.length);
  if (bytes[0] === 0x50 && bytes[1] === 0x4b && bytes[2] === 0x03 && bytes[3] === 0x04) {
    const { readPth } = await import('./pth');
    // The names, dtypes and shapes must fit a VGG before any storage is inflated (zip bombs).
    const tensors = await readPth(file, (plan) => fitVgg({ source: file, metadata: {}, tensors: plan }));
    return { tensors, metadata: { 'vgg.preset': 'torchvision', 'vgg.container': 'PyTorch checkpoint' }, container: 'PyTorch checkpoint' };
  }
  if (looksLikeSafetensors(bytes)) return undefined;
  const onnx = await import('./onnx');
  const model = onnx.decodeOnnx(bytes);
  if (model) return onnx.convertOnnx(model, file);
  const caffe = await import('./caffe');
  if (!caffe.decodeCaffe(bytes)) return undefined;
  // Read again into memory of its own (the mapping is read-only), where unaligned blobs can be
  // aligned in place rather than copied.
  let own: Buffer;
  try {
    own = await fs.promises.readFile(file);
  } catch (e) {
    throw new VggError('E_IO', `cannot read weights file ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { cause: e });
  }
  // A plain Uint8Array: protobufjs then gives bytes fields as views (subarray) of it.
  return caffe.convertCaffe(caffe.decodeCaffe(new Uint8Array(own.buffer, own.byteOffset, own.length))!, file, true);
}

/** An 8-byte header length that fits the file, then the header's opening brace. */
function looksLikeSafetensors(bytes: Uint8Array): boolean {
  if (bytes.length < 9) return true;
  const length = new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true);
  return length <= BigInt(bytes.length - 8) && bytes[8] === 0x7b;
}

/** Maps `file` and converts it: what `vgg convert` reads. A safetensors or packed file is refused. */
export async function openContainer(file: string): Promise<Converted> {
  let bytes: Uint8Array;
  try {
    bytes = new Uint8Array(native().mapFile(file));
  } catch (e) {
    if (e instanceof VggError) throw e;
    throw new VggError('E_IO', `cannot map weights file ${file}: ${(e as Error).message}`, { cause: e });
  }
  const converted = await readContainer(file, bytes);
  if (!converted) {
    throw new VggError('E_WEIGHTS_FORMAT', `${file} is not a Caffe, Keras HDF5, ONNX or PyTorch file${looksLikeSafetensors(bytes) ? ' (it looks like safetensors already: load it as it is)' : ''}`);
  }
  return converted;
}
