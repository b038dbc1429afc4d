import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { tmpDir } from '../helpers';
import { dict, pickle, storedZip, tensor, type Deflated } from '../forge-pth';
import { MAIN } from './tools';
import { spawnSync } from 'node:child_process';

/** What the bombs inflate to: 96 x 16 MiB of zeros, 1.6 GB, from a zip of about 1.5 MB. */
const PIECE = 16 << 20;
const PIECES = 96;
const BOMB_BYTES = PIECE * PIECES;
const RSS_LIMIT = 600e6;

/** Deflate blocks of one piece of zeros, ending byte-aligned with the window reset, so copies of it follow each other. */
function zerosBomb(): Deflated {
  const zeros = Buffer.alloc(PIECE);
  const piece = zlib.deflateRawSync(zeros, { level: 9, finishFlush: zlib.constants.Z_FULL_FLUSH });
  let crc = 0;
  for (let i = 0; i < PIECES; i++) crc = zlib.crc32(zeros, crc);
  // then a final empty block
  return { deflated: Buffer.concat([...Array<Buffer>(PIECES).fill(piece), Buffer.from([0x03, 0x00])]), size: BOMB_BYTES, crc };
}

/** A tiny VGG (one 8-channel conv, fc 16-16-10) whose conv weights' storage is `storage` with `numel` floats. */
function tinyVgg(numel: number): Buffer {
  const t = (key: string, size: number[]) => tensor('FloatStorage', key, size.reduce((a, b) => a * b, 1), 0, size, size.map((_, d) => size.slice(d + 1).reduce((a, b) => a * b, 1)));
  return pickle(dict([
    ['features.0.weight', tensor('FloatStorage', '0', numel, 0, [8, 3, 3, 3], [27, 9, 3, 1])],
    ['features.0.bias', t('1', [8])],
    ['classifier.0.weight', t('2', [16, 8 * 49])],
    ['classifier.0.bias', t('3', [16])],
    ['classifier.3.weight', t('4', [16, 16])],
    ['classifier.3.bias', t('5', [16])],
    ['classifier.6.weight', t('6', [10, 16])],
    ['classifier.6.bias', t('7', [10])],
  ]));
}
const f32zeros = (n: number) => new Uint8Array(4 * n);
const smallStorages = { 1: 8, 2: 16 * 392, 3: 16, 4: 256, 5: 16, 6: 160, 7: 10 };

/** `vgg convert` in a child process that reports its peak RSS. */
function convert(pth: string) {
  const preload = path.join(tmpDir(), 'peak-rss.js');
  fs.writeFileSync(preload, "process.on('exit', () => process.stderr.write(`\\npeak-rss ${process.resourceUsage().maxRSS * 1024}\\n`));\n");
  const r = spawnSync(process.execPath, ['-r', preload, MAIN, 'convert', pth, path.join(tmpDir(), 'out.safetensors')], { encoding: 'utf8', env: { ...process.env, VGG_DEBUG: '' }, timeout: 120_000 });
  const rss = Number(/peak-rss (\d+)/.exec(r.stderr)?.[1]);
  return { ...r, rss };
}

describe('faults: a .pth zip bomb', function () {
  this.timeout(180_000);
  let bomb: Deflated;
  before(() => { bomb = zerosBomb(); });

  function checkpoint(dataPkl: Buffer, storages: Record<string, Uint8Array | Deflated>): string {
    const file = path.join(tmpDir(), 'bomb.pth');
    fs.writeFileSync(file, storedZip({
      'archive/data.pkl': dataPkl,
      ...Object.fromEntries(Object.entries(storages).map(([k, v]) => [`archive/data/${k}`, v])),
    }));
    return file;
  }
  const small = Object.fromEntries(Object.entries(smallStorages).map(([k, n]) => [k, f32zeros(n)]));

  it('a VGG whose conv storage declares 1.6 GB behind 216 weights is E_WEIGHTS_FORMAT, nothing inflated', () => {
    const file = checkpoint(tinyVgg(BOMB_BYTES / 4), { 0: bomb, ...small });
    assert.ok(fs.statSync(file).size < 4e6);
    const r = convert(file);
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /E_WEIGHTS_FORMAT.*data\/0 declares 402653184 float32 elements.*use 216/);
    assert.ok(r.rss < RSS_LIMIT, `peak RSS ${(r.rss / 1e6).toFixed(0)} MB`);
  });

  it('tensors that are no VGG are refused by their names and shapes before their 1.6 GB storage is inflated', () => {
    const file = checkpoint(pickle(dict([['bomb.weight', tensor('FloatStorage', '0', BOMB_BYTES / 4, 0, [BOMB_BYTES / 4], [1])]])), { 0: bomb });
    const r = convert(file);
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /E_WEIGHTS_MISSING.*no convolution weights/);
    assert.ok(r.rss < RSS_LIMIT, `peak RSS ${(r.rss / 1e6).toFixed(0)} MB`);
  });

  it('a storage that inflates past its declared size is stopped there: E_WEIGHTS_FORMAT', () => {
    const file = checkpoint(tinyVgg(216), { 0: { ...bomb, size: 4 * 216 }, ...small });
    const r = convert(file);
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /E_WEIGHTS_FORMAT/);
    assert.ok(r.rss < RSS_LIMIT, `peak RSS ${(r.rss / 1e6).toFixed(0)} MB`);
  });
});
