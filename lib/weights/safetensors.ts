import { VggError, isInt } from '../errors';
import { readRegularFile, writeAtomic } from '../files';
import type { Tensor } from '../tensor';

/** Bytes per element of every dtype the safetensors format defines. */
const DTYPE_SIZE: Record<string, number> = {
  BOOL: 1, U8: 1, I8: 1, F8_E4M3: 1, F8_E5M2: 1, I16: 2, U16: 2, F16: 2, BF16: 2,
  I32: 4, U32: 4, F32: 4, I64: 8, U64: 8, F64: 8,
};
/** A safetensors header is JSON; real ones are kilobytes. This bound stops a forged length early. */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;

export interface TensorEntry {
  name: string;
  dtype: string;
  shape: number[];
  /** Absolute byte range in the file. */
  begin: number;
  end: number;
}

export interface SafetensorsFile {
  source: string;
  bytes: Uint8Array;
  metadata: Record<string, string>;
  tensors: Map<string, TensorEntry>;
}

const isCount = (v: unknown): v is number => isInt(v, 0);

/**
 * Validates a whole safetensors header against the file it sits in: length bounds, JSON,
 * dtypes, shapes, byte counts, and offsets that tile the data section without gaps or overlap.
 */
export function parseSafetensors(bytes: Uint8Array, source: string): SafetensorsFile {
  const bad = (why: string) => new VggError('E_WEIGHTS_FORMAT', `${source}: not a valid safetensors file: ${why}`);
  if (bytes.length < 8) throw bad(`file is ${bytes.length} bytes, shorter than the 8-byte header length`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLen = view.getBigUint64(0, true);
  if (headerLen < 2n || headerLen > BigInt(Math.min(MAX_HEADER_BYTES, bytes.length - 8))) {
    throw bad(`header length ${headerLen} does not fit in a file of ${bytes.length} bytes`);
  }
  const dataStart = 8 + Number(headerLen);
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(8, dataStart)));
  } catch (e) {
    throw bad(`header is not UTF-8 JSON (${(e as Error).message})`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw bad('header is not a JSON object');

  const metadata: Record<string, string> = {};
  const entries: TensorEntry[] = [];
  for (const [name, value] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof value !== 'object' || value === null || Array.isArray(value)) throw bad('__metadata__ is not an object');
      for (const [k, v] of Object.entries(value)) {
        if (typeof v !== 'string') throw bad(`__metadata__.${k} is not a string`);
        metadata[k] = v;
      }
      continue;
    }
    const t = value as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof t !== 'object' || t === null) throw bad(`tensor ${name} is not an object`);
    if (typeof t.dtype !== 'string' || !(t.dtype in DTYPE_SIZE)) throw bad(`tensor ${name} has unknown dtype ${JSON.stringify(t.dtype)}`);
    if (!Array.isArray(t.shape) || !t.shape.every(isCount)) throw bad(`tensor ${name} has shape ${JSON.stringify(t.shape)}, expected a list of non-negative integers`);
    const off = t.data_offsets;
    if (!Array.isArray(off) || off.length !== 2 || !isCount(off[0]) || !isCount(off[1]) || off[0] > off[1]) {
      throw bad(`tensor ${name} has data_offsets ${JSON.stringify(off)}, expected [begin, end] with 0 <= begin <= end`);
    }
    const elements = (t.shape as number[]).reduce((a, b) => a * b, 1);
    if (elements * DTYPE_SIZE[t.dtype] !== off[1] - off[0]) {
      throw bad(`tensor ${name} is ${t.dtype} ${JSON.stringify(t.shape)} (${elements * DTYPE_SIZE[t.dtype]} bytes) but data_offsets span ${off[1] - off[0]} bytes`);
    }
    entries.push({ name, dtype: t.dtype, shape: t.shape as number[], begin: dataStart + off[0], end: dataStart + off[1] });
  }

  // The format requires the data section to be tiled exactly: no holes, no overlaps, nothing past the end.
  const sorted = [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = dataStart;
  for (const e of sorted) {
    if (e.begin !== cursor) {
      throw bad(e.begin < cursor ? `tensor ${e.name} overlaps the tensor before it` : `a gap of ${e.begin - cursor} bytes precedes tensor ${e.name}`);
    }
    cursor = e.end;
  }
  if (cursor !== bytes.length) {
    throw bad(cursor > bytes.length
      ? `tensor data runs to byte ${cursor} but the file has ${bytes.length} bytes (truncated?)`
      : `${bytes.length - cursor} bytes after the last tensor are not claimed by any tensor`);
  }
  return { source, bytes, metadata, tensors: new Map(entries.map((e) => [e.name, e])) };
}

function halfToFloat(h: number): number {
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  const sign = h & 0x8000 ? -1 : 1;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

let halfTable: Float32Array | undefined;

/** 16-bit floats (IEEE half, or bfloat16: the top half of a float32) widened to float32. */
export function widen16(bits: Uint16Array, kind: 'F16' | 'BF16'): Float32Array {
  const out = new Float32Array(bits.length);
  if (kind === 'BF16') {
    const words = new Uint32Array(out.buffer);
    for (let i = 0; i < bits.length; i++) words[i] = bits[i] << 16;
  } else {
    // A lookup over all 65536 halves: decoding each one arithmetically takes seconds for VGG16.
    if (!halfTable) {
      halfTable = new Float32Array(65536);
      for (let h = 0; h < 65536; h++) halfTable[h] = halfToFloat(h);
    }
    const table = halfTable;
    for (let i = 0; i < bits.length; i++) out[i] = table[bits[i]];
  }
  return out;
}

/**
 * The tensor's elements as float32: a view into the file (no copy) for aligned F32 data,
 * a converted copy for F16 and BF16.
 */
export function readF32(file: SafetensorsFile, entry: TensorEntry): Float32Array {
  const { bytes } = file;
  const count = (entry.end - entry.begin) / (DTYPE_SIZE[entry.dtype] ?? 1);
  const at = bytes.byteOffset + entry.begin;
  switch (entry.dtype) {
    case 'F32':
      if (at % 4 === 0) return new Float32Array(bytes.buffer, at, count);
      return new Float32Array(bytes.slice(entry.begin, entry.end).buffer);
    case 'BF16':
    case 'F16': {
      const bits = at % 2 === 0 ? new Uint16Array(bytes.buffer, at, count) : new Uint16Array(bytes.slice(entry.begin, entry.end).buffer);
      return widen16(bits, entry.dtype);
    }
    default:
      throw new VggError('E_WEIGHTS_FORMAT', `${file.source}: tensor ${entry.name} is ${entry.dtype}, expected F32, F16 or BF16`);
  }
}

/**
 * The 8-byte length and JSON header of a safetensors file whose F32 tensors follow in this
 * order; it needs only their shapes, so a writer can stream data it has not made yet.
 */
export function encodeHeader(shapes: [string, number[]][], metadata?: Record<string, string>): Buffer {
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length) header.__metadata__ = metadata;
  let offset = 0;
  for (const [name, shape] of shapes) {
    const bytes = 4 * shape.reduce((a, b) => a * b, 1);
    header[name] = { dtype: 'F32', shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8); // keeps the data 8-byte aligned
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  return Buffer.concat([length, Buffer.from(json)]);
}

/** A safetensors file's bytes for F32 tensors: the header, then each tensor's data in order. */
export function encodeSafetensors(tensors: Record<string, Tensor>, metadata?: Record<string, string>): Uint8Array[] {
  const header = encodeHeader(Object.entries(tensors).map(([name, t]) => [name, t.shape]), metadata);
  return [header, ...Object.values(tensors).map((t) => new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength))];
}

/**
 * Writes F32 tensors as a safetensors file, atomically: a temporary file in the same folder,
 * then a rename, so a reader never sees half a file.
 */
export function writeSafetensors(file: string, tensors: Record<string, Tensor>, metadata?: Record<string, string>): void {
  writeAtomic(file, (out) => {
    for (const chunk of encodeSafetensors(tensors, metadata)) out.write(chunk);
  });
}

/** Files read whole (input batches) are at most this: one Buffer's worth, 2 GiB. */
const MAX_READ_BYTES = 2 ** 31 - 1;

/** Reads a whole (small) safetensors file, such as an input batch, into memory. */
export function readSafetensorsFile(file: string): SafetensorsFile {
  const bytes = readRegularFile(file, 'safetensors file', MAX_READ_BYTES);
  return parseSafetensors(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength), file);
}
