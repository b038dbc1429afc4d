// Packed weights (vgg pack): loading one gives bit-identical results to the file it came from,
// in every precision; a corrupt, truncated or foreign packed file is a VggError, never a crash.
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { calibrate } from '../lib/tasks/calibrate';
import { writeCalibration } from '../lib/weights/calibration';
import { VggError } from '../lib/errors';
import { loadModel } from '../lib/model';
import { openWeights } from '../lib/weights';
import { native } from '../lib/native';
import { packWeights } from '../lib/tasks/pack';
import { fixture, prng, readTensors, tmpDir } from './helpers';

const D = fixture('D.weights.safetensors');
const main = path.resolve(__dirname, '../lib/cli/main.js');
const identical = (a: Float32Array, b: Float32Array) => Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0;

function header(bytes: Buffer): { json: Record<string, unknown>; length: number } {
  const length = Number(bytes.readBigUInt64LE(8));
  return { json: JSON.parse(bytes.subarray(16, 16 + length).toString('utf8')), length };
}

/** The file with its header replaced by `json`, in the same place (it may grow into the padding before the data). */
function withHeader(bytes: Buffer, json: object): Buffer {
  const { json: old } = header(bytes);
  const dataStart = Math.min(...(old.tensors as { offset: number }[]).map((t) => t.offset));
  const text = JSON.stringify(json);
  assert.ok(16 + Buffer.byteLength(text) <= dataStart, 'the edited header must fit before the data');
  const out = Buffer.from(bytes);
  out.writeBigUInt64LE(BigInt(Buffer.byteLength(text)), 8);
  out.write(text, 16, 'utf8');
  return out;
}

describe('packed weights', function () {
  this.timeout(60000);
  let dir: string;
  let calib: string;
  const input = () => readTensors(fixture('input-224.safetensors')).input;
  const wide = () => readTensors(fixture('input-256x320.safetensors')).input;

  before(async () => {
    dir = tmpDir();
    calib = path.join(dir, 'D.calib.json');
    writeCalibration(calib, await calibrate(D, input()));
  });

  for (const [mode, options] of [
    ['fp32', {}], ['fp32 Winograd', { winograd: true }], ['bf16', { precision: 'bf16' }], ['int8', { precision: 'int8' }],
  ] as const) {
    it(`${mode}: a packed load runs bit for bit like the original, on packed and other shapes and both heads`, async () => {
      const opts = { ...options, ...(mode === 'int8' ? { calibration: calib } : {}) };
      const file = path.join(dir, `D.${mode.replace(' ', '-')}.packed`);
      const r = await packWeights(D, file, { ...opts, shapes: [[2, 224, 224, 'fixed']] });
      assert.equal(r.header.precision, options.precision ?? 'fp32');
      const original = await loadModel(D, { ...opts, threads: 2 });
      const packed = await loadModel(file, { threads: 2 });
      assert.equal(packed.precision, original.precision);
      assert.equal(packed.winograd, original.winograd);
      for (const [x, head] of [[input(), 'fixed'], [wide(), 'fixed'], [wide(), 'dense']] as const) {
        const a = await original.run(x, { outputs: ['conv3_1', 'fc7', 'prob'], head });
        const b = await packed.run(x, { outputs: ['conv3_1', 'fc7', 'prob'], head });
        for (const blob of ['conv3_1', 'fc7', 'prob']) assert.ok(identical(a[blob].data, b[blob].data), `${mode} ${head} ${x.shape.join('x')} ${blob}`);
      }
      await original.dispose();
      await packed.dispose();
    });
  }

  it('stores the weights 64-byte aligned with the version, ISA, precision and shapes', async () => {
    const file = path.join(dir, 'D.info.packed');
    await packWeights(D, file, { precision: 'int8', calibration: calib });
    const bytes = fs.readFileSync(file);
    assert.equal(bytes.subarray(0, 8).toString('latin1'), 'VGGPACK1');
    const { json } = header(bytes);
    const v = native().versions();
    assert.deepEqual([json.onednn, json.isa, json.precision, json.shapes], [v.onednn, v.isa, 'int8', [[1, 224, 224, 'fixed'], [8, 224, 224, 'fixed']]]);
    const tensors = json.tensors as { kind: string; offset: number; layer: number }[];
    assert.ok(tensors.every((t) => t.offset % 64 === 0));
    // One weights layout per layer (16: 13 convs and 3 fc), shared by both shapes; scales for the s8 ones.
    assert.equal(tensors.filter((t) => t.kind === 'weights').length, 16);
    assert.equal(tensors.filter((t) => t.kind === 'scales').length, 15);
    // vgg info reads a packed file like any weights file.
    const w = await openWeights(file);
    assert.deepEqual([w.arch.arch, w.naming, w.convs[0].weight], ['D', 'torchvision', null]);
  });

  it('refuses a file packed by another oneDNN or for another ISA, saying how to repack', async () => {
    const bytes = fs.readFileSync(path.join(dir, 'D.fp32.packed'));
    const { json } = header(bytes);
    for (const [key, value] of [['onednn', '9.9.9'], ['isa', 'avx2']]) {
      const file = path.join(dir, `foreign-${key}.packed`);
      fs.writeFileSync(file, withHeader(bytes, { ...json, [key]: value }));
      await assert.rejects(loadModel(file), (e: unknown) => e instanceof VggError && e.code === 'E_WEIGHTS_FOREIGN' && /vgg pack --weights ORIGINAL/.test(e.message) && e.message.includes(value));
    }
  });

  it('refuses options the file was not packed for, and the GPU', async () => {
    const file = path.join(dir, 'D.fp32.packed');
    const fails = (opts: object, pattern: RegExp) => assert.rejects(loadModel(file, opts), (e: unknown) => e instanceof VggError && e.code === 'E_ARG' && pattern.test(e.message));
    await fails({ precision: 'bf16' }, /packed for fp32, not bf16/);
    await fails({ winograd: true }, /packed for fp32, not fp32 with Winograd/);
    await fails({ device: 'cuda' }, /only the CPU backend reads/);
    await assert.rejects(packWeights(file, path.join(dir, 'again.packed')), /packed already/);
    await assert.rejects(packWeights(D, path.join(dir, 'x.packed'), { precision: 'int8' }), /int8 needs activation ranges/);
    await assert.rejects(packWeights(D, path.join(dir, 'x.packed'), { shapes: [[1, 224, 224, 'wide' as 'fixed']] }), /options\.shapes/);
    assert.ok(!fs.existsSync(path.join(dir, 'x.packed')));
  });

  it('rejects corrupt files with E_WEIGHTS_FORMAT naming what is wrong', async () => {
    const bytes = fs.readFileSync(path.join(dir, 'D.int8.packed'));
    const { json, length } = header(bytes);
    const tensors = json.tensors as { kind: string; offset: number; bytes: number; layout?: string; layer: number }[];
    const weights = tensors.findIndex((t) => t.kind === 'weights' && t.layer === 3);
    const edit = (change: (t: typeof tensors) => void) => {
      const copy = JSON.parse(JSON.stringify(tensors)) as typeof tensors;
      change(copy);
      return withHeader(bytes, { ...json, tensors: copy });
    };
    const layout = Buffer.from(tensors[weights].layout!, 'base64');
    const cases: [string, Buffer, RegExp][] = [
      ['truncated', bytes.subarray(0, bytes.length - 100), /lies outside the file/],
      ['preamble only', bytes.subarray(0, 12), /shorter than its 16-byte preamble/],
      ['huge header length', (() => { const b = Buffer.from(bytes); b.writeBigUInt64LE(1n << 40n, 8); return b; })(), /header length/],
      ['not JSON', (() => { const b = Buffer.from(bytes); b.write('{{{', 16); return b; })(), /not UTF-8 JSON/],
      ['misaligned', edit((t) => { t[weights].offset += 4; }), /aligned/],
      ['offset past the end', edit((t) => { t[weights].offset = 64 * Math.ceil(bytes.length / 64); }), /outside the file/],
      ['a missing layer', edit((t) => { t.splice(weights, 1); }), /no weights for layer 3/],
      ['a layout of the wrong size', edit((t) => { t[weights].layout = layout.subarray(0, 100).toString('base64'); }), /bytes; this oneDNN's are/],
      ['a layout of another layer', edit((t) => { t[weights].layout = t.find((x) => x.kind === 'weights' && x.layer === 5)!.layout; }), /does not describe layer 3/],
      ['an unknown tensor kind', edit((t) => { t[0].kind = 'mystery'; }), /not a known tensor/],
      ['a bias of the wrong length', edit((t) => { t.find((x) => x.kind === 'bias')!.bytes = 12; }), /output channels/],
    ];
    for (const [what, file, pattern] of cases) {
      const at = path.join(dir, 'corrupt.packed');
      fs.writeFileSync(at, file);
      await assert.rejects(loadModel(at, { threads: 1 }), (e: unknown) => e instanceof VggError && e.code === 'E_WEIGHTS_FORMAT' && pattern.test(e.message), what);
    }
    assert.ok(length > 0);
  });

  // Byte offsets in oneDNN 2.x's dnnl_memory_desc_t on x86-64 (DNNL_MAX_NDIMS 12).
  const DESC = { padded: 112, formatKind: 312, strides: 320, innerNblks: 416, innerBlks: 424, innerIdxs: 520, winoSize: 360 };

  /** Loads `file` with tensor `pick`'s layout edited by `change` (and its byte count set to `bytes`), then runs it. */
  async function loadEdited(file: string, pick: (t: { kind: string; layer: number; layout?: string }) => boolean, change: (layout: Buffer) => void, bytes?: (old: number) => number) {
    const original = fs.readFileSync(path.join(dir, file));
    const { json } = header(original);
    const tensors = json.tensors as { kind: string; layer: number; layout: string; bytes: number; offset: number }[];
    const t = tensors.find(pick)!;
    const layout = Buffer.from(t.layout, 'base64');
    change(layout);
    t.layout = layout.toString('base64');
    let body = original;
    if (bytes) {
      // The new size as the file's last tensor, so that every size check passes but the layout's own.
      t.bytes = bytes(t.bytes);
      t.offset = 64 * Math.ceil(original.length / 64);
      body = Buffer.concat([original, Buffer.alloc(t.offset + t.bytes - original.length, 1)]);
      // A forger recomputes the checksum: the layout checks must hold on their own.
      (t as { crc32?: number }).crc32 = zlib.crc32(body.subarray(t.offset, t.offset + t.bytes));
    }
    const at = path.join(dir, 'edited.packed');
    fs.writeFileSync(at, withHeader(body, json));
    const m = await loadModel(at, { threads: 1 });
    try {
      await m.run(input(), { outputs: ['prob'] });
    } finally {
      await m.dispose();
    }
  }

  it('rejects layouts that would make oneDNN read out of bounds (found by review; each crashed the process)', async () => {
    const fc8 = (t: { kind: string; layer: number }) => t.kind === 'weights' && t.layer === 15;
    const fails = (p: Promise<unknown>, pattern: RegExp) => assert.rejects(p, (e: unknown) => e instanceof VggError && pattern.test(e.message));
    // An inner block of size 0 (a division by zero) and an inner block on a dimension that does not exist.
    await fails(loadEdited('D.fp32.packed', fc8, (l) => { l.writeInt32LE(1, DESC.innerNblks); l.writeBigInt64LE(0n, DESC.innerBlks); l.writeBigInt64LE(0n, DESC.innerIdxs); }), /inner block out of range/);
    await fails(loadEdited('D.fp32.packed', fc8, (l) => { l.writeInt32LE(1, DESC.innerNblks); l.writeBigInt64LE(1n, DESC.innerBlks); l.writeBigInt64LE(100000n, DESC.innerIdxs); }), /inner block out of range/);
    // Overlapping strides whose computed size matches the tensor's byte count.
    await fails(loadEdited('D.fp32.packed', fc8, (l) => {
      l.writeInt32LE(0, DESC.innerNblks);
      l.writeBigInt64LE(4096n, DESC.strides); l.writeBigInt64LE(4096n, DESC.strides + 8);
      l.writeBigInt64LE(l.readBigInt64LE(8), DESC.padded); l.writeBigInt64LE(l.readBigInt64LE(16), DESC.padded + 8);
    }, () => 256 * 4096 * 4), /not a dense layout/);
    // A Winograd layout whose stated size is smaller than its weights: used only where a primitive
    // asks for exactly it, so this one is never read (the run converts nothing and fails cleanly).
    const bytes = fs.readFileSync(path.join(dir, 'D.fp32-Winograd.packed'));
    const tensors = header(bytes).json.tensors as { kind: string; layer: number; layout: string }[];
    const wino = tensors.find((t) => t.kind === 'weights' && Buffer.from(t.layout, 'base64').readInt32LE(DESC.formatKind) !== 2 /* dnnl_blocked */)!;
    const cut = (t: { kind: string; layer: number; layout?: string }) => t.kind === 'weights' && t.layout === wino.layout;
    await fails(loadEdited('D.fp32-Winograd.packed', cut, (l) => l.writeBigUInt64LE(4096n, DESC.winoSize), () => 4096), /layout the packed file lacks|cannot be converted/);
  });

  it('survives random damage to the header and layouts: a VggError or a working model, never a crash', async () => {
    const bytes = fs.readFileSync(path.join(dir, 'D.fp32.packed'));
    const { length } = header(bytes);
    const rand = prng(11);
    const at = path.join(dir, 'fuzz.packed');
    let loaded = 0;
    for (let i = 0; i < 150; i++) {
      const b = Buffer.from(bytes);
      for (let k = 0; k < 1 + Math.floor(rand() * 3); k++) b[16 + Math.floor(rand() * length)] = Math.floor(rand() * 256);
      fs.writeFileSync(at, b);
      try {
        const m = await loadModel(at, { threads: 1 });
        await m.run(input(), { outputs: ['prob'] });
        await m.dispose();
        loaded++;
      } catch (e) {
        assert.ok(e instanceof VggError, `mutation ${i}: ${(e as Error).stack}`);
      }
    }
    assert.ok(loaded < 150, 'no mutation was caught');
  });

  it('vgg calibrate and vgg pack from the command line', () => {
    const vgg = (...args: string[]) => spawnSync(process.execPath, [main, ...args], { encoding: 'utf8' });
    const cal = path.join(dir, 'cli.calib.json');
    let r = vgg('calibrate', '--weights', D, '--input', fixture('input-224.safetensors'), '--out', cal);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /^vgg calibrate: 2 images, 15 layers -> .*cli\.calib\.json/);
    const out = path.join(dir, 'cli.packed');
    r = vgg('pack', '--weights', D, '--precision', 'int8', '--calibration', cal, '--batch', '2', '--out', out);
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stderr, /^vgg pack: int8 for oneDNN [\d.]+ on \w+, 16 layouts, [\d.]+ MB -> /);
    // On a terminal, one native call gives no steps to count: what it packs and the time so far.
    const onTerminal = spawnSync(process.execPath, ['-r', path.resolve(__dirname, 'tty.js'), main, 'pack', '--weights', D, '--batch', '1,2', '--out', path.join(dir, 'tty.packed')], { encoding: 'utf8' });
    assert.equal(onTerminal.status, 0, onTerminal.stderr);
    assert.match(onTerminal.stderr, new RegExp(`vgg pack: packing ${D.replace(/[.]/g, '\\.')} for 2 input shapes, 0 s`));
    // vgg run on the packed file gives what the original gives with the same options.
    const a = path.join(dir, 'a.safetensors'), b = path.join(dir, 'b.safetensors');
    assert.equal(vgg('run', '--weights', D, '--precision', 'int8', '--calibration', cal, '--input', fixture('input-224.safetensors'), '--outputs', 'fc7', '--out', a).status, 0);
    assert.equal(vgg('run', '--weights', out, '--input', fixture('input-224.safetensors'), '--outputs', 'fc7', '--out', b).status, 0);
    assert.ok(identical(readTensors(a).fc7.data, readTensors(b).fc7.data));
    r = vgg('calibrate', '--weights', D, '--out', cal);
    assert.equal(r.status, 1);
    assert.match(r.stderr, /^vgg: E_ARG: expected exactly one of --input <file> or --images <path>\n$/);
    r = vgg('run', '--weights', D, '--precision', 'int8', '--input', fixture('input-224.safetensors'), '--outputs', 'fc7', '--out', a);
    assert.match(r.stderr, /^vgg: E_ARG: int8 needs activation ranges: make them with `vgg calibrate/);
  });
});
