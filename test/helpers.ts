// Shared test utilities: fixture paths, tensor reading, error measures, temp files, and
// forging (possibly malformed) safetensors files from the fixtures.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { mulberry32 } from '../lib/weights/random';
import { readF32, readSafetensorsFile } from '../lib/weights/safetensors';
import type { Tensor } from '../lib/tensor';

/**
 * The read-only PyTorch fixtures, in the repository (test/fixtures; the tests run from
 * dist/test); VGGNET_FIXTURES moves them elsewhere (the GPU machine).
 */
export const FIXTURES = process.env.VGGNET_FIXTURES ?? path.resolve(__dirname, '../../test/fixtures');
export const fixture = (name: string) => path.join(FIXTURES, name);

/** Every tensor of a safetensors file as float32. */
export function readTensors(file: string): Record<string, Tensor> {
  const f = readSafetensorsFile(file);
  const out: Record<string, Tensor> = {};
  for (const [name, entry] of f.tensors) out[name] = { data: readF32(f, entry), shape: entry.shape };
  return out;
}

/** Max abs error over max abs expected value (the measure of the project's fp32 bar, README's precisions table); the abs error if expected is all zeros. */
export function relError(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  if (actual.length !== expected.length) throw new Error(`relError: lengths differ (${actual.length} vs ${expected.length})`);
  let err = 0, scale = 0;
  for (let i = 0; i < expected.length; i++) {
    const d = Math.abs(actual[i] - expected[i]);
    err = Number.isNaN(d) ? Infinity : Math.max(err, d);
    scale = Math.max(scale, Math.abs(expected[i]));
  }
  return scale === 0 ? err : err / scale;
}

/** Seeded PRNG (mulberry32): uniform in [0, 1). */
export function prng(seed: number): () => number {
  const next = mulberry32(seed);
  return () => next() / 4294967296;
}

/** A reproducible NCHW input batch [n, 3, h, w] with values in [-2, 2). */
export function randomInput(n: number, h: number, w: number, seed = 1): Tensor {
  const rand = prng(seed);
  const data = new Float32Array(n * 3 * h * w);
  for (let i = 0; i < data.length; i++) data[i] = rand() * 4 - 2;
  return { data, shape: [n, 3, h, w] };
}

/**
 * Awaits `work` while a 10 ms timer ticks: how long it took, the timer's worst lateness and how
 * many times it fired (what shows the event loop stayed free).
 */
export async function withTicker<T>(work: () => Promise<T>): Promise<{ result: T; ms: number; maxLag: number; ticks: number }> {
  let maxLag = 0;
  let ticks = 0;
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    maxLag = Math.max(maxLag, now - last - 10);
    last = now;
    ticks++;
  }, 10);
  const start = performance.now();
  try {
    const result = await work();
    return { result, ms: performance.now() - start, maxLag, ticks };
  } finally {
    clearInterval(timer);
  }
}

// ---- temp files --------------------------------------------------------------

const made: string[] = [];
/** A fresh temp folder, removed after the whole run (or left to the OS if the run dies). */
export function tmpDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vggnet-test-'));
  made.push(dir);
  return dir;
}
if (typeof after === 'function') {
  after(() => { for (const dir of made.splice(0)) fs.rmSync(dir, { recursive: true, force: true }); });
}

let scratch: string | undefined;
/** Writes bytes to `name` in a shared temp folder (overwriting it) and returns the path. */
export function writeTemp(bytes: Uint8Array, name = 'weights.safetensors'): string {
  scratch ??= tmpDir();
  const file = path.join(scratch, name);
  fs.writeFileSync(file, bytes);
  return file;
}

// ---- forging safetensors files ----------------------------------------------

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Header = Record<string, any>;

/** A safetensors file's JSON header (parsed) and its data section (the bytes after the header). */
export function splitSafetensors(bytes: Uint8Array): { header: Header; data: Uint8Array } {
  const len = Number(Buffer.from(bytes.buffer, bytes.byteOffset, 8).readBigUInt64LE(0));
  const header = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset + 8, len).toString('utf8')) as Header;
  return { header, data: bytes.subarray(8 + len) };
}

/**
 * A header and data section joined with a fresh 8-byte length. An object header is padded with
 * spaces to keep the data 8-byte aligned, as writers do; raw JSON text is written as given.
 */
export function joinSafetensors(header: Header | string, data: Uint8Array): Buffer {
  let text = typeof header === 'string' ? header : JSON.stringify(header);
  if (typeof header !== 'string') text += ' '.repeat((8 - (Buffer.byteLength(text) % 8)) % 8);
  const json = Buffer.from(text);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([len, json, data]);
}

/**
 * A fixture's bytes with its header edited in place: `edit` changes the parsed header (or returns
 * a replacement object or raw JSON text); the data section is kept byte for byte.
 */
export function editHeader(file: string, edit: (h: Header) => Header | string | void): Buffer {
  const { header, data } = splitSafetensors(fs.readFileSync(file));
  return joinSafetensors(edit(header) ?? header, data);
}

export interface RawTensor { dtype: string; shape: number[]; data: Uint8Array }

/**
 * A fixture's tensors re-packed after `edit` adds, removes or replaces entries (data_offsets
 * recomputed, so the file stays well formed); `metadata` may be edited too or deleted.
 */
export function repack(file: string, edit: (tensors: Map<string, RawTensor>, meta: { metadata?: Record<string, string> }) => void): Buffer {
  const { header, data } = splitSafetensors(fs.readFileSync(file));
  const meta = { metadata: header.__metadata__ as Record<string, string> | undefined };
  const tensors = new Map<string, RawTensor>();
  for (const [name, t] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    tensors.set(name, { dtype: t.dtype, shape: t.shape, data: data.subarray(t.data_offsets[0], t.data_offsets[1]) });
  }
  edit(tensors, meta);
  const out: Header = meta.metadata ? { __metadata__: meta.metadata } : {};
  let offset = 0;
  for (const [name, t] of tensors) {
    out[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.data.length] };
    offset += t.data.length;
  }
  return joinSafetensors(out, Buffer.concat([...tensors.values()].map((t) => t.data)));
}
