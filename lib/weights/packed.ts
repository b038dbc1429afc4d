import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import type { Calibration } from './calibration';
import { VggError } from '../errors';
import { ioError, writeAllAsync } from '../files';
import { native, type NativePackedWeight, type Precision } from '../native';
import { featureLayers, validateArch, type Arch, type ConvLayer } from '../arch/topology';
import type { Naming } from './binding';
import { PRESETS, type Preset } from './layers';

/**
 * A packed weights file (`vgg pack`): every layer's weights already in the layout this
 * machine's oneDNN primitives chose, so loading maps them and hands them over without a copy,
 * and processes that load one file share its pages.
 *
 *   bytes 0-7    "VGGPACK1"
 *   bytes 8-15   header length L, little-endian u64
 *   16 … 16+L    header: UTF-8 JSON (PackedHeader)
 *   then         tensors, each at a 64-byte-aligned offset from the start of the file
 *
 * Version 2 added a CRC-32 of each tensor's bytes, which loading checks (verifyPacked).
 */
export const PACKED_MAGIC = 'VGGPACK1';
const ALIGN = 64;
const MAX_HEADER_BYTES = 16 * 1024 * 1024;

interface PackedTensor {
  /** `bias` and `scales` are float32; `weights` is one layer's weights in `layout`. */
  kind: 'weights' | 'bias' | 'scales';
  /** conv index in network order, then fc6, fc7, fc8. */
  layer: number;
  offset: number;
  bytes: number;
  /** weights: the oneDNN memory descriptor, base64. */
  layout?: string;
  /** CRC-32 (zlib's) of the tensor's bytes. */
  crc32: number;
}

export interface PackedHeader {
  format: 'vggnet-packed';
  version: 2;
  onednn: string;
  isa: string;
  precision: Precision;
  winograd: boolean;
  arch: Arch;
  naming: Naming;
  /** The preprocessing the weights expect (absent in files packed before it was recorded: torchvision). */
  preset?: Preset;
  /** The classes' names, where the weights packed had them. */
  classNames?: string[];
  /** The [n, h, w, head] the layouts were chosen for. */
  shapes: [number, number, number, 'fixed' | 'dense'][];
  calibration?: Calibration;
  tensors: PackedTensor[];
}

/** What loadModel needs from a packed file: the header, biases, and the weights for the addon. */
export interface PackedWeights {
  header: PackedHeader;
  biases: Float32Array[];
  packed: NativePackedWeight[];
}

export const isPacked = (bytes: Uint8Array) => bytes.length >= 8 && Buffer.from(bytes.buffer, bytes.byteOffset, 8).toString('latin1') === PACKED_MAGIC;

/**
 * The dims each layer's weights may have in a primitive: OIHW for the convs and fc6 (a 7x7
 * window of pool5, either head); fc7 and fc8 as OI (fixed head) or OI11 (dense head's 1x1 convs).
 */
function weightDims(arch: Arch): number[][][] {
  const convs = featureLayers(arch).filter((l): l is ConvLayer => l.kind === 'conv');
  const c = convs[convs.length - 1].outC;
  const fc = (o: number, i: number) => [[o, i], [o, i, 1, 1]];
  return [
    ...convs.map((l) => [[l.outC, l.inC, l.kernel, l.kernel]]),
    [[arch.fcHidden, c, 7, 7]], fc(arch.fcHidden, arch.fcHidden), fc(arch.classes, arch.fcHidden),
  ];
}

const sameDims = (a: number[], b: number[]) => a.length === b.length && a.every((v, i) => v === b[i]);

/** The header fields loadModel and vgg info read besides the tensors. */
function checkHeaderFields(h: PackedHeader): string | undefined {
  if (h.naming !== 'torchvision' && h.naming !== 'timm') return `naming ${JSON.stringify(h.naming)}`;
  if (h.preset !== undefined && !PRESETS.includes(h.preset)) return `preset ${JSON.stringify(h.preset)}`;
  if (h.classNames !== undefined && !(Array.isArray(h.classNames) && h.classNames.length === h.arch.classes && h.classNames.every((n) => typeof n === 'string'))) {
    return 'classNames';
  }
  const shapeOk = (s: unknown) => Array.isArray(s) && s.length === 4 && s.slice(0, 3).every((v) => Number.isSafeInteger(v) && v > 0) && (s[3] === 'fixed' || s[3] === 'dense');
  if (!Array.isArray(h.shapes) || !h.shapes.every(shapeOk)) return 'shapes';
  return undefined;
}

/**
 * Validates a mapped packed file: header, version and ISA against this build's oneDNN, every
 * tensor inside the file and aligned, every layout a weights layout of the right shape and size.
 */
export function readPacked(bytes: Uint8Array, source: string): PackedWeights {
  const bad = (why: string) => new VggError('E_WEIGHTS_FORMAT', `${source}: not a valid packed weights file: ${why}`);
  if (bytes.length < 16) throw bad(`file is ${bytes.length} bytes, shorter than its 16-byte preamble`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLen = view.getBigUint64(8, true);
  if (headerLen < 2n || headerLen > BigInt(Math.min(MAX_HEADER_BYTES, bytes.length - 16))) throw bad(`header length ${headerLen} does not fit in a file of ${bytes.length} bytes`);
  let h: PackedHeader;
  try {
    h = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(16, 16 + Number(headerLen))));
  } catch (e) {
    throw bad(`header is not UTF-8 JSON (${(e as Error).message})`);
  }
  if (typeof h !== 'object' || h === null || h.format !== 'vggnet-packed') throw bad('header is not a vggnet-packed header');
  if ((h.version as number) === 1) {
    throw new VggError('E_WEIGHTS_FORMAT', `${source} was packed by an older vggnet, without the checksums loading now verifies. Pack it again from the original weights: vgg pack --weights ORIGINAL --out ${path.basename(source)}`);
  }
  if (h.version !== 2) throw bad(`header version ${JSON.stringify(h.version)}; this vggnet reads version 2`);
  const here = native().versions();
  if (h.onednn !== here.onednn || h.isa !== here.isa) {
    throw new VggError('E_WEIGHTS_FOREIGN', `${source} was packed by oneDNN ${h.onednn} for ${h.isa}; this machine runs oneDNN ${here.onednn} on ${here.isa}. Pack it again here from the original weights: vgg pack --weights ORIGINAL --out ${path.basename(source)}`);
  }
  try {
    validateArch(h.arch, `${source}: arch`);
  } catch (e) {
    throw bad((e as Error).message);
  }
  if (!['fp32', 'bf16', 'int8'].includes(h.precision) || typeof h.winograd !== 'boolean') throw bad(`unknown precision ${JSON.stringify(h.precision)}`);
  if (h.precision === 'int8' && (typeof h.calibration !== 'object' || h.calibration === null)) throw bad('an int8 file without its calibration');
  if (!Array.isArray(h.tensors)) throw bad('no tensor list');
  const field = checkHeaderFields(h);
  if (field) throw bad(`a header with bad ${field}`);

  const dims = weightDims(h.arch);
  const biases: Float32Array[] = [];
  const scales: Float32Array[] = [];
  const packed: NativePackedWeight[] = [];
  const dataStart = 16 + Number(headerLen);
  for (const [i, t] of h.tensors.entries()) {
    const what = `tensor ${i} (${String(t?.kind)} of layer ${String(t?.layer)})`;
    if (!['weights', 'bias', 'scales'].includes(t?.kind) || !Number.isSafeInteger(t.layer) || t.layer < 0 || t.layer >= dims.length) throw bad(`${what} is not a known tensor`);
    if (!Number.isSafeInteger(t.offset) || !Number.isSafeInteger(t.bytes) || t.offset < dataStart || t.offset % ALIGN !== 0 || t.bytes < 1 || t.offset + t.bytes > bytes.length) {
      throw bad(`${what} lies outside the file or is not ${ALIGN}-byte aligned`);
    }
    if (!Number.isInteger(t.crc32) || t.crc32 < 0 || t.crc32 > 0xffffffff) throw bad(`${what} has no CRC-32`);
    const data = bytes.subarray(t.offset, t.offset + t.bytes);
    const outC = dims[t.layer][0][0];
    if (t.kind !== 'weights') {
      if (t.bytes !== 4 * outC) throw bad(`${what} is ${t.bytes} bytes; layer ${t.layer} has ${outC} output channels`);
      const values = new Float32Array(data.buffer, data.byteOffset, outC);
      // int8 weight scales divide the accumulator: a zero or non-finite one would give NaN outputs.
      if (t.kind === 'scales' && !values.every((v) => Number.isFinite(v) && v > 0)) throw bad(`${what} holds a scale that is not a positive number`);
      (t.kind === 'bias' ? biases : scales)[t.layer] = values;
      continue;
    }
    const layout = Buffer.from(String(t.layout), 'base64');
    let info: ReturnType<ReturnType<typeof native>['describeLayout']>;
    try {
      info = native().describeLayout(layout);
    } catch (e) {
      throw bad(`${what}: ${(e as Error).message}`);
    }
    const want = weightType(h.precision, t.layer);
    if (!info || info.dataType !== want || !dims[t.layer].some((d) => sameDims(d, info!.dims)) || info.bytes !== t.bytes) {
      throw bad(`${what}: its layout does not describe layer ${t.layer}'s ${want} weights of ${JSON.stringify(dims[t.layer][0])} in ${t.bytes} bytes`);
    }
    packed.push({ layer: t.layer, layout: new Uint8Array(layout), data });
  }
  for (let layer = 0; layer < dims.length; layer++) {
    if (!biases[layer]) throw bad(`no bias for layer ${layer}`);
    if (!packed.some((p) => p.layer === layer)) throw bad(`no weights for layer ${layer}`);
    if (weightType(h.precision, layer) === 's8' && !scales[layer]) throw bad(`no int8 scales for layer ${layer}`);
  }
  for (const p of packed) if (scales[p.layer]) p.scales = scales[p.layer];
  return { header: h, biases, packed };
}

/** oneDNN's type for a layer's weights: int8 runs the first conv, which reads the signed image, in float32. */
function weightType(precision: Precision, layer: number): string {
  if (precision === 'int8') return layer === 0 ? 'f32' : 's8';
  return precision === 'bf16' ? 'bf16' : 'f32';
}

/**
 * Checks every tensor's bytes against the CRC-32 its header gives: damage to the data (a bad
 * disk, a truncated copy) is E_WEIGHTS_FORMAT naming the tensor, rather than wrong answers.
 */
export async function verifyPacked(bytes: Uint8Array, header: PackedHeader, source: string): Promise<void> {
  for (const [i, t] of header.tensors.entries()) {
    const crc = await crc32(bytes.subarray(t.offset, t.offset + t.bytes));
    if (crc !== t.crc32) {
      throw new VggError('E_WEIGHTS_FORMAT', `${source}: tensor ${i} (${t.kind} of layer ${t.layer}) is damaged: its CRC-32 is ${crc}, the header says ${t.crc32}. Copy the file again or pack it again from the original weights`);
    }
  }
}

/** zlib's CRC-32 (hardware-assisted in Node's zlib), a slice at a time so that the event loop keeps turning. */
async function crc32(data: Uint8Array): Promise<number> {
  const SLICE = 16 << 20;
  let crc = 0;
  for (let at = 0; at < data.byteLength; at += SLICE) {
    if (at) await new Promise((resolve) => setImmediate(resolve));
    crc = zlib.crc32(data.subarray(at, at + SLICE), crc);
  }
  return crc;
}

/** Writes a packed file: header first, each tensor at a 64-byte boundary; temp file then rename. */
export async function writePacked(file: string, header: Omit<PackedHeader, 'tensors'>,
  tensors: { kind: PackedTensor['kind']; layer: number; data: Uint8Array; layout?: Uint8Array }[]): Promise<number> {
  const list: PackedTensor[] = [];
  for (const t of tensors) {
    list.push({ kind: t.kind, layer: t.layer, offset: 0, bytes: t.data.byteLength, crc32: await crc32(t.data), ...(t.layout ? { layout: Buffer.from(t.layout).toString('base64') } : {}) });
  }
  // Offsets depend on the header's length, which depends on the offsets' digits: settle it.
  let json = '';
  for (let guess = 0; ; ) {
    let at = align(16 + guess);
    for (const t of list) { t.offset = at; at = align(at + t.bytes); }
    json = JSON.stringify({ ...header, tensors: list });
    if (Buffer.byteLength(json) <= guess) break;
    guess = Buffer.byteLength(json) + 64;
  }
  const head = Buffer.alloc(list.length ? list[0].offset : align(16 + Buffer.byteLength(json)));
  head.write(PACKED_MAGIC, 0, 'latin1');
  head.writeBigUInt64LE(BigInt(Buffer.byteLength(json)), 8);
  head.write(json, 16, 'utf8');

  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  let fh: fs.promises.FileHandle | undefined;
  try {
    fh = await fs.promises.open(tmp, 'w');
    await writeAllAsync(fh, head, 0);
    for (const [i, t] of tensors.entries()) await writeAllAsync(fh, t.data, list[i].offset);
    await fh.sync();
    await fh.close();
    fh = undefined;
    await fs.promises.rename(tmp, file);
  } catch (e) {
    await fh?.close().catch(() => {});
    await fs.promises.rm(tmp, { force: true });
    throw ioError(e, `cannot write ${file}`);
  }
  const last = list[list.length - 1];
  return last ? last.offset + last.bytes : head.length;
}

const align = (n: number) => Math.ceil(n / ALIGN) * ALIGN;
