import type * as H5 from 'h5wasm';
import { VggError } from '../errors';
import { FC6_WINDOW } from '../arch/topology';
import { elementCount, toTorchvision, type Converted, type Layer } from './layers';
import type { Tensor } from '../tensor';

/**
 * Reads Keras HDF5 weights (`save_weights`, or the model_weights group of `model.save`) with
 * h5wasm, HDF5's own C library built for WebAssembly; its Node build reads the file in place.
 * The root's `layer_names` lists the layers in order, each group's `weight_names` its arrays
 * (Keras 2 `block1_conv1/kernel:0`, Keras 1 `block1_conv1_W_1:0`): the reader goes by that
 * order and the arrays' shapes, not the names. A weights-only file does not record what its
 * weightless layers are, so a pool is a weightless layer whose class (in a full model's
 * config) is MaxPooling2D or, without a config, whose name says pool, as Keras names them.
 */

export const HDF5_SIGNATURE = [0x89, 0x48, 0x44, 0x46, 0x0d, 0x0a, 0x1a, 0x0a];

type H5Module = typeof H5;
let h5: Promise<H5Module> | undefined;

/** h5wasm is an ES module (and 3 MB of WebAssembly): imported on first use, which compiled CommonJS can only do through import(). */
function loadH5wasm(): Promise<H5Module> {
  const importModule = new Function('name', 'return import(name)') as (name: string) => Promise<H5Module>;
  h5 ??= importModule('h5wasm/node').then(async (m) => {
    await m.ready;
    // HDF5 errors become JS exceptions carrying HDF5's error stack, instead of a print to stdout.
    m.Module.activate_throwing_error_handler();
    return m;
  });
  return h5;
}

interface KerasConfig { class_name?: string; config?: { padding?: string; strides?: number[]; pool_size?: number[]; data_format?: string; epsilon?: number } }

export async function convertKeras(file: string, fileSize: number): Promise<Converted> {
  const container = 'Keras HDF5';
  const fail = (why: string) => new VggError('E_WEIGHTS_FORMAT', `${file} (${container}): ${why}`);
  const { File } = await loadH5wasm();
  let h5file: H5.File;
  try {
    h5file = new File(file, 'r');
  } catch (e) {
    throw fail(`HDF5 cannot open it (${hdf5Reason(e)})`);
  }
  try {
    return toTorchvision(readLayers(h5file, fileSize, fail), file, container, 'caffe');
  } catch (e) {
    if (e instanceof VggError) throw e;
    throw fail(`HDF5 cannot read it (${hdf5Reason(e)})`);
  } finally {
    h5file.close();
  }
}

/** The innermost cause in an HDF5 error stack ("#016: ... in H5O__chunk_deserialize(): message size exceeds buffer end"). */
function hdf5Reason(e: unknown): string {
  const message = String((e as Error)?.message ?? e);
  const causes = [...message.matchAll(/#\d+: .* in (\w+)\(\): (.*)/g)];
  const last = causes[causes.length - 1];
  return last ? `${last[1]}: ${last[2]}` : message.split('\n')[0];
}

function readLayers(file: H5.File, fileSize: number, fail: (why: string) => VggError): Layer[] {
  const wrapped = file.get('model_weights');
  const root = wrapped instanceof Object && 'keys' in wrapped ? (wrapped as H5.Group) : file;
  const layerNames = strings(root.attrs.layer_names?.json_value, 'the root attribute layer_names', fail);
  const configs = modelConfigs(file);
  const out: Layer[] = [];
  let channels = 3;
  for (const name of layerNames) {
    const config = configs.get(name);
    const group = root.get(name) as H5.Group | null;
    if (!group || !('keys' in group)) throw fail(`layer_names lists ${name}, but the file has no group ${name}`);
    const arrays = strings(group.attrs.weight_names?.json_value ?? [], `${name}'s weight_names`, fail)
      .map((w) => dataset(group, w, fileSize, fail));
    if (config?.config?.data_format === 'channels_first') throw fail(`layer ${name} is channels_first; vggnet reads Keras' default channels_last weights`);
    if (arrays.length === 0) {
      const isPool = config ? config.class_name === 'MaxPooling2D' : /pool/i.test(name);
      if (isPool) {
        const c = config?.config;
        if (c && (String(c.pool_size) !== '2,2' || String(c.strides ?? c.pool_size) !== '2,2')) throw fail(`layer ${name} pools ${c.pool_size} with strides ${c.strides}, expected 2x2 with stride 2`);
        out.push({ kind: 'pool', name });
      }
      continue;
    }
    const [stored] = arrays;
    if (stored.shape.length === 4) {
      const first = { shape: stored.shape, data: stored.read() };
      // H, W, in, out -> out, in, H, W
      const [kh, kw, inC, outC] = first.shape;
      if (kh !== kw) throw fail(`layer ${name} has a ${kh}x${kw} kernel`);
      if (config?.config && (config.config.padding !== 'same' || String(config.config.strides ?? [1, 1]) !== '1,1')) throw fail(`layer ${name} has padding ${config.config.padding} and strides ${config.config.strides}, expected 'same' and 1`);
      const weight = new Float32Array(first.data.length);
      for (let y = 0; y < kh; y++) for (let x = 0; x < kw; x++) for (let i = 0; i < inC; i++) for (let o = 0; o < outC; o++) {
        weight[((o * inC + i) * kh + y) * kw + x] = first.data[((y * kw + x) * inC + i) * outC + o];
      }
      out.push({ kind: 'conv', name, weight: { data: weight, shape: [outC, inC, kh, kw] }, bias: vector(arrays[1], name, fail) });
      channels = outC;
    } else if (stored.shape.length === 2) {
      const first = !out.some((l) => l.kind === 'fc');
      out.push({ kind: 'fc', name, weight: denseWeight(stored, first ? flattenedRow(stored, channels, name, fail) : (r) => r), bias: vector(arrays[1], name, fail) });
    } else if (arrays.length === 4 && arrays.every((a) => a.shape.length === 1)) {
      const [gamma, beta, mean, variance] = arrays.map((a) => a.read());
      out.push({ kind: 'bn', name, gamma, beta, mean, variance, eps: config?.config?.epsilon ?? 1e-3 });
    } else {
      throw fail(`layer ${name} has arrays of shapes ${arrays.map((a) => `[${a.shape}]`).join(', ')}, which are not a convolution, a dense layer or a batch norm`);
    }
  }
  return out;
}

/**
 * Keras' Flatten lays pool5 out as H, W, C; torchvision's as C, H, W: fc1's kernel row
 * (cell * C + c) is torchvision's input (c * 49 + cell).
 */
function flattenedRow(kernel: Stored, channels: number, name: string, fail: (why: string) => VggError): (row: number) => number {
  const cells = FC6_WINDOW * FC6_WINDOW;
  if (kernel.shape[0] !== channels * cells) throw fail(`the first dense layer ${name} has ${kernel.shape[0]} inputs, expected ${channels} x ${FC6_WINDOW} x ${FC6_WINDOW} from pool5`);
  return (row) => (row % channels) * cells + Math.floor(row / channels);
}

/** Rows of a dense kernel read at a time: about 16 MB, where all of fc1 would stay in WebAssembly's heap (it never shrinks). */
const SLICE_FLOATS = 4 << 20;

/** A Keras dense kernel [in, out] as torchvision's [out, in], its rows moved by `toRow`, read a slice at a time. */
function denseWeight(kernel: Stored, toRow: (row: number) => number): Tensor {
  const [inF, outF] = kernel.shape;
  const out = new Float32Array(inF * outF);
  const step = Math.max(1, Math.floor(SLICE_FLOATS / Math.max(outF, 1)));
  for (let start = 0; start < inF; start += step) {
    const end = Math.min(inF, start + step);
    const block = kernel.rows(start, end);
    for (let r = start; r < end; r++) {
      const to = toRow(r);
      const from = (r - start) * outF;
      for (let o = 0; o < outF; o++) out[o * inF + to] = block[from + o];
    }
  }
  return { data: out, shape: [outF, inF] };
}

function vector(t: Stored | undefined, name: string, fail: (why: string) => VggError): Float32Array | null {
  if (!t) return null;
  if (t.shape.length !== 1) throw fail(`layer ${name}'s bias has shape [${t.shape}], expected one dimension`);
  return t.read();
}

/** A dataset whose shape and type are checked, read whole or by rows. */
interface Stored { shape: number[]; read(): Float32Array; rows(start: number, end: number): Float32Array }

/** A float dataset, its size checked against the file's before anything is read (Keras writes them uncompressed). */
function dataset(group: H5.Group, name: string, fileSize: number, fail: (why: string) => VggError): Stored {
  const ds = group.get(name) as H5.Dataset | null;
  if (!ds || !('shape' in ds)) throw fail(`${group.path} lists weight ${name}, but the file has no such dataset`);
  const shape = ds.shape ?? [];
  const { type, size } = ds.metadata;
  const count = elementCount(shape, `dataset ${group.path}/${name}`, fail);
  if (type !== 1 || (size !== 4 && size !== 8)) throw fail(`dataset ${group.path}/${name} is not float32 or float64`);
  if (count * size > fileSize) throw fail(`dataset ${group.path}/${name} has shape [${shape}], more data than the file's ${fileSize} bytes`);
  const floats = (value: unknown, n: number) => {
    if (!(value instanceof Float32Array || value instanceof Float64Array) || value.length !== n) throw fail(`dataset ${group.path}/${name} did not read as ${n} floats`);
    return value instanceof Float32Array ? value : new Float32Array(value);
  };
  const rowSize = count / (shape[0] || 1);
  return {
    shape,
    read: () => floats(ds.value, count),
    rows: (start, end) => floats(ds.slice([[start, end], ...shape.slice(1).map((): [] => [])]), (end - start) * rowSize),
  };
}

function strings(value: unknown, what: string, fail: (why: string) => VggError): string[] {
  const list = typeof value === 'string' ? [value] : value;
  if (!Array.isArray(list) || !list.every((v) => typeof v === 'string')) throw fail(`${what} is not a list of names; is this a Keras weights file?`);
  return list as string[];
}

/** Each layer's class and settings, by name, from a full model's `model_config`; empty for a weights-only file. */
function modelConfigs(file: H5.File): Map<string, KerasConfig> {
  const raw = file.attrs.model_config?.json_value;
  const out = new Map<string, KerasConfig>();
  if (typeof raw !== 'string') return out;
  try {
    const layers = (JSON.parse(raw) as { config?: { layers?: (KerasConfig & { config?: { name?: string } })[] } }).config?.layers ?? [];
    for (const l of layers) if (l.config?.name) out.set(l.config.name, l);
  } catch {
    // An unreadable config leaves the reader to go by names, as for a weights-only file.
  }
  return out;
}
