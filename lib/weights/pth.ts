import * as yauzl from 'yauzl';
import { VggError, describe, isInt } from '../errors';
import { checkRegularFile } from '../files';
import { unpickle } from './pickle';
import { widen16 } from './safetensors';
import type { Tensor } from '../tensor';

/**
 * Reads the zip checkpoints `torch.save(model.state_dict(), f)` writes (PyTorch >= 1.6):
 * `<archive>/data.pkl` is a pickle of the dict whose tensors point, by key, at raw storages
 * in `<archive>/data/<key>`.
 */

type FloatDtype = 'float32' | 'float16' | 'bfloat16' | 'float64';
type Dtype = FloatDtype | 'int64' | 'int32';

const DTYPE_SIZE: Record<Dtype, number> = { float32: 4, float16: 2, bfloat16: 2, float64: 8, int64: 8, int32: 4 };

/** Legacy storage classes, which torch.save still names for every tensor's storage. */
const STORAGE_CLASSES: Record<string, Dtype> = {
  'torch.FloatStorage': 'float32', 'torch.HalfStorage': 'float16', 'torch.BFloat16Storage': 'bfloat16',
  'torch.DoubleStorage': 'float64', 'torch.LongStorage': 'int64', 'torch.IntStorage': 'int32',
};

/** data.pkl of a state_dict is kilobytes; this bound stops a forged entry size early. */
const MAX_PICKLE_BYTES = 100 * 1024 * 1024;

class StorageType {
  constructor(readonly dtype: Dtype) {}
}

class StorageRef {
  constructor(readonly key: string, readonly dtype: Dtype, readonly numel: number) {}
}

class TensorRef {
  constructor(readonly storage: StorageRef, readonly offset: number, readonly size: number[], readonly stride: number[]) {}
}

/** What a checkpoint's pickle says of a tensor before any storage is read. */
export interface TensorPlan { dtype: 'F32' | 'F16' | 'BF16'; shape: number[] }

/**
 * Every float tensor of the state_dict in `file`, as float32, in the state_dict's order.
 * `check` sees every tensor's name, dtype and shape before a byte of a storage is inflated, and
 * throws to stop there (vgg convert: does this fit a VGG?); no storage is inflated past what its
 * tensors reach, nor past its declared size (a zip bomb).
 */
export async function readPth(file: string, check?: (tensors: Map<string, TensorPlan>) => void): Promise<Map<string, Tensor>> {
  const bad = (why: string) => new VggError('E_WEIGHTS_FORMAT', `${file}: ${why}`);
  await checkRegularFile(file, 'checkpoint');
  const zip = await openZip(file);
  try {
    const entries = await listEntries(zip);
    const archive = findArchive(entries, bad);
    await checkByteOrder(zip, entries.get(`${archive}byteorder`), bad);
    const storageEntry = (key: string) => entries.get(`${archive}data/${key}`);
    const root = await readDataPkl(zip, entries.get(`${archive}data.pkl`)!, storageEntry, file);
    const refs = tensorRefs(stateDict(root, bad), bad);
    check?.(new Map([...refs].map(([key, t]) => [key, { dtype: PLAN_DTYPE[t.storage.dtype as FloatDtype], shape: [...t.size] }])));
    checkStorageSizes(refs, bad);
    return await loadTensors(refs, (ref, dtype) => readStorage(zip, storageEntry(ref.key)!, ref, dtype, bad));
  } catch (e) {
    throw asVggError(e, file);
  } finally {
    zip.close();
  }
}

async function readDataPkl(zip: yauzl.ZipFile, pkl: yauzl.Entry, storageEntry: (key: string) => unknown, file: string): Promise<unknown> {
  const bad = (why: string) => new VggError('E_WEIGHTS_FORMAT', `${file}: data.pkl ${why}`);
  if (pkl.uncompressedSize > MAX_PICKLE_BYTES) throw bad(`is ${pkl.uncompressedSize} bytes, more than the ${MAX_PICKLE_BYTES} a state_dict needs`);
  return unpickle(await readEntry(zip, pkl), {
    label: `${file}: data.pkl`,
    globals: pickleGlobals(bad),
    persistentLoad: (pid) => storageRef(pid, (key) => storageEntry(key) !== undefined, bad),
  });
}

/** float64 storages are read as float32. */
const PLAN_DTYPE: Record<FloatDtype, TensorPlan['dtype']> = { float32: 'F32', float16: 'F16', bfloat16: 'BF16', float64: 'F32' };

/** The state_dict's float tensors, checked to lie inside their storages; nothing read yet. */
function tensorRefs(dict: Map<unknown, unknown>, bad: (why: string) => VggError): Map<string, TensorRef> {
  const refs = new Map<string, TensorRef>();
  for (const [key, value] of dict) {
    if (typeof key !== 'string') throw bad(`the state_dict has a key ${describe(key)}, expected string keys`);
    if (!(value instanceof TensorRef)) throw bad(`${key} is ${value instanceof Map ? 'a dict' : describe(value)}, expected a tensor`);
    const { storage } = value;
    const { dtype } = storage;
    if (dtype === 'int64' || dtype === 'int32') {
      // BatchNorm's step counter: an integer buffer that inference never reads.
      if (key.endsWith('.num_batches_tracked')) continue;
      throw bad(`${key} is an ${dtype} tensor, expected a floating-point tensor`);
    }
    checkExtent(key, value, bad);
    refs.set(key, value);
  }
  return refs;
}

/**
 * A storage may hold no more elements than its tensors reach: the declared size is what gets
 * inflated, and a few kilobytes of zip can declare gigabytes of zeros behind a small tensor.
 */
function checkStorageSizes(refs: Map<string, TensorRef>, bad: (why: string) => VggError): void {
  const reach = new Map<StorageRef['key'], { storage: StorageRef; end: number; key: string }>();
  for (const [key, t] of refs) {
    const end = extentEnd(t);
    const seen = reach.get(t.storage.key);
    if (!seen || end > seen.end) reach.set(t.storage.key, { storage: t.storage, end, key });
  }
  for (const { storage, end, key } of reach.values()) {
    if (storage.numel > end) {
      throw bad(`storage data/${storage.key} declares ${storage.numel} ${storage.dtype} elements, but its tensors (${key} and any others) use ${end}; refusing to inflate it`);
    }
  }
}

async function loadTensors(refs: Map<string, TensorRef>, readStorage: (ref: StorageRef, dtype: FloatDtype) => Promise<Float32Array>): Promise<Map<string, Tensor>> {
  // Decoded once per key: several tensors may be views of one storage.
  const storages = new Map<string, Float32Array>();
  const tensors = new Map<string, Tensor>();
  for (const [key, value] of refs) {
    const { storage } = value;
    let data = storages.get(storage.key);
    if (!data) storages.set(storage.key, (data = await readStorage(storage, storage.dtype as FloatDtype)));
    tensors.set(key, { data: view(data, value), shape: [...value.size] });
  }
  return tensors;
}

/** yauzl reports both file-system and format problems as plain Errors; only the former have a syscall. */
function asVggError(e: unknown, file: string): VggError {
  if (e instanceof VggError) return e;
  const err = e as NodeJS.ErrnoException;
  if (err.syscall) return new VggError('E_IO', `cannot read ${file}: ${err.message}`, { cause: e });
  return new VggError('E_WEIGHTS_FORMAT',
    `${file}: not a valid PyTorch zip checkpoint (${err.message}); expected a file written by torch.save`, { cause: e });
}

function openZip(file: string): Promise<yauzl.ZipFile> {
  return new Promise((resolve, reject) => {
    yauzl.open(file, { lazyEntries: true, autoClose: false }, (err, zip) => (err ? reject(asVggError(err, file)) : resolve(zip)));
  });
}

function listEntries(zip: yauzl.ZipFile): Promise<Map<string, yauzl.Entry>> {
  return new Promise((resolve, reject) => {
    const entries = new Map<string, yauzl.Entry>();
    zip.on('entry', (entry: yauzl.Entry) => {
      entries.set(entry.fileName, entry);
      zip.readEntry();
    });
    zip.once('end', () => resolve(entries));
    zip.once('error', reject);
    zip.readEntry();
  });
}

/** The folder holding data.pkl: "archive/" in recent PyTorch, the file's stem in older ones. */
function findArchive(entries: Map<string, yauzl.Entry>, bad: (why: string) => VggError): string {
  const pkls = [...entries.keys()].filter((name) => /^[^/]+\/data\.pkl$/.test(name));
  if (pkls.length !== 1) {
    throw bad(pkls.length
      ? `has ${pkls.length} data.pkl entries (${pkls.join(', ')}), expected one`
      : 'is a zip without <archive>/data.pkl, expected a checkpoint written by torch.save');
  }
  return pkls[0].slice(0, -'data.pkl'.length);
}

/** Storages are raw bytes in the writer's byte order; absent means little-endian (older PyTorch). */
async function checkByteOrder(zip: yauzl.ZipFile, entry: yauzl.Entry | undefined, bad: (why: string) => VggError) {
  if (!entry) return;
  if (entry.uncompressedSize > 16) throw bad(`byteorder entry is ${entry.uncompressedSize} bytes, expected "little"`);
  const order = new TextDecoder().decode(await readEntry(zip, entry)).trim();
  if (order !== 'little') throw bad(`byteorder is ${JSON.stringify(order)}, expected "little" (big-endian checkpoints are not supported)`);
}

/** A whole entry, in a fresh (so 8-byte aligned) buffer; yauzl checks the byte count it declares. */
function readEntry(zip: yauzl.ZipFile, entry: yauzl.Entry): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const out = new Uint8Array(entry.uncompressedSize);
    let filled = 0;
    zip.openReadStream(entry, (err, stream) => {
      if (err) return reject(err);
      stream.on('data', (chunk: Buffer) => {
        if (chunk.length > out.length - filled) return stream.destroy(new Error(`${entry.fileName} is longer than its declared size`));
        out.set(chunk, filled);
        filled += chunk.length;
      });
      stream.once('error', reject);
      stream.once('end', () => resolve(out));
    });
  });
}

/** The only names data.pkl may use; REDUCE can call nothing but these functions. */
function pickleGlobals(bad: (why: string) => VggError): Map<string, unknown> {
  const globals = new Map<string, unknown>(Object.entries(STORAGE_CLASSES).map(([name, dtype]) => [name, new StorageType(dtype)]));
  globals.set('collections.OrderedDict', (args: unknown[]) => {
    // torch.save fills an OrderedDict with SETITEMS after creating it empty.
    if (args.length) throw bad('builds an OrderedDict from arguments, expected an empty one');
    return new Map();
  });
  globals.set('torch._utils._rebuild_tensor_v2', (args: unknown[]) => rebuildTensor(args, bad));
  globals.set('torch._utils._rebuild_parameter', (args: unknown[]) => {
    if (!(args[0] instanceof TensorRef)) throw bad(`rebuilds a Parameter from ${describe(args[0])}, expected a tensor`);
    return args[0];
  });
  return globals;
}

const isCount = (v: unknown): v is number => isInt(v, 0);
const isCounts = (v: unknown): v is number[] => Array.isArray(v) && v.every(isCount);

/** A persistent id: ('storage', storage class, key, location, numel). */
function storageRef(pid: unknown, exists: (key: string) => boolean, bad: (why: string) => VggError): StorageRef {
  if (!Array.isArray(pid) || pid.length !== 5 || pid[0] !== 'storage') {
    throw bad(`has a persistent id ${describe(pid)}, expected ('storage', type, key, location, numel)`);
  }
  const [, type, key, , numel] = pid;
  if (!(type instanceof StorageType)) throw bad(`has a storage whose type is ${describe(type)}, expected a torch.*Storage class`);
  if (typeof key !== 'string' || !isCount(numel)) throw bad(`has a storage with key ${describe(key)} and size ${describe(numel)}, expected a string and a count`);
  if (!exists(key)) throw bad(`references storage ${key}, but the zip has no data/${key} entry`);
  return new StorageRef(key, type.dtype, numel);
}

/** _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata]). */
function rebuildTensor(args: unknown[], bad: (why: string) => VggError): TensorRef {
  const [storage, offset, size, stride] = args;
  if (args.length < 6 || args.length > 7 || !(storage instanceof StorageRef)) {
    throw bad(`calls _rebuild_tensor_v2 with ${args.length} arguments, expected (storage, offset, size, stride, requires_grad, hooks[, metadata])`);
  }
  if (!isCount(offset) || !isCounts(size) || !isCounts(stride) || size.length !== stride.length) {
    throw bad(`rebuilds a tensor on storage ${storage.key} with offset ${describe(offset)}, size ${describe(size)}, stride ${describe(stride)}; expected a count and two equally long lists of counts`);
  }
  return new TensorRef(storage, offset, size, stride);
}

/** The dict of tensors: the top level, or what a {state_dict: ...} / {model: ...} wrapper holds. */
function stateDict(root: unknown, bad: (why: string) => VggError): Map<unknown, unknown> {
  if (!(root instanceof Map)) throw bad(`data.pkl holds ${describe(root)}, expected a dict of tensors (a state_dict)`);
  for (const wrapper of ['state_dict', 'model']) {
    const inner = root.get(wrapper);
    if (inner instanceof Map) return inner;
  }
  return root;
}

/**
 * A view's elements must lie inside its storage. It may also not have more elements than the
 * storage (an expanded, self-overlapping view), so the output stays bounded by the file's size.
 */
function checkExtent(key: string, t: TensorRef, bad: (why: string) => VggError): void {
  const count = t.size.reduce((a, b) => a * b, 1);
  const end = extentEnd(t);
  const { numel } = t.storage;
  if (!Number.isSafeInteger(end) || end > numel || count > numel) {
    throw bad(`${key} (size [${t.size}], stride [${t.stride}], offset ${t.offset}) needs ` +
      `${count > numel ? `${count} elements` : `element ${end - 1}`} of storage data/${t.storage.key}, which has ${numel}`);
  }
}

/** One past the last storage element a tensor reads. */
function extentEnd(t: TensorRef): number {
  const count = t.size.reduce((a, b) => a * b, 1);
  return count === 0 ? 0 : t.size.reduce((last, n, d) => last + (n - 1) * t.stride[d], t.offset) + 1;
}

async function readStorage(zip: yauzl.ZipFile, entry: yauzl.Entry, ref: StorageRef, dtype: FloatDtype, bad: (why: string) => VggError): Promise<Float32Array> {
  const bytes = ref.numel * DTYPE_SIZE[ref.dtype];
  if (entry.uncompressedSize !== bytes) {
    throw bad(`storage ${entry.fileName} is ${entry.uncompressedSize} bytes, expected ${ref.numel} ${ref.dtype} elements (${bytes} bytes)`);
  }
  return toFloat32(await readEntry(zip, entry), dtype);
}

/** Decodes little-endian storage bytes (on a little-endian host, like the safetensors reader). */
function toFloat32(bytes: Uint8Array, dtype: FloatDtype): Float32Array {
  const n = bytes.byteLength / DTYPE_SIZE[dtype];
  switch (dtype) {
    case 'float32':
      return new Float32Array(bytes.buffer, bytes.byteOffset, n);
    case 'float64':
      return new Float32Array(new Float64Array(bytes.buffer, bytes.byteOffset, n));
    case 'bfloat16':
      return widen16(new Uint16Array(bytes.buffer, bytes.byteOffset, n), 'BF16');
    case 'float16':
      return widen16(new Uint16Array(bytes.buffer, bytes.byteOffset, n), 'F16');
  }
}

/** The tensor's elements in row-major order: a view of the storage when they already are. */
function view(storage: Float32Array, t: TensorRef): Float32Array {
  const count = t.size.reduce((a, b) => a * b, 1);
  if (isContiguous(t.size, t.stride)) return storage.subarray(t.offset, t.offset + count);
  const out = new Float32Array(count);
  const index = new Array<number>(t.size.length).fill(0);
  let at = t.offset;
  for (let i = 0; i < count; i++) {
    out[i] = storage[at];
    // Advance the multi-index like an odometer, moving `at` by the matching strides.
    for (let d = t.size.length - 1; d >= 0; d--) {
      if (++index[d] < t.size[d]) {
        at += t.stride[d];
        break;
      }
      index[d] = 0;
      at -= t.stride[d] * (t.size[d] - 1);
    }
  }
  return out;
}

/** Row-major strides, ignoring dimensions of size 1, whose stride PyTorch leaves arbitrary. */
function isContiguous(size: number[], stride: number[]): boolean {
  let expected = 1;
  for (let d = size.length - 1; d >= 0; d--) {
    if (size[d] !== 1 && stride[d] !== expected) return false;
    expected *= size[d];
  }
  return true;
}
