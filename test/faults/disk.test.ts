import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { VggError } from '../../lib/errors';
import { writeAtomic } from '../../lib/files';
import { fixture, tmpDir } from '../helpers';
import { images, tmpfs, vgg } from './tools';

const WEIGHTS = fixture('D.weights.safetensors');
/** pool1 at 64x64 is 16 kB an image: 48 images are a 0.8 MB journal, which fits in 1 MB, and as much again for the output, which does not. */
const COUNT = 48;
const extractArgs = (input: string, out: string, ...more: string[]) =>
  ['extract', input, '--weights', WEIGHTS, '--outputs', 'pool1', '--out', out, '--batch', '8', '--size', '64', '--crop', '64', '--threads', '2', ...more];

describe('faults: a full disk', function () {
  this.timeout(180_000);
  let disk: Exclude<ReturnType<typeof tmpfs>, string>;
  let input: string;

  before(async function () {
    const mounted = tmpfs('1m');
    if (typeof mounted === 'string') {
      console.log(`      skipped: ${mounted}`);
      this.skip();
    }
    disk = mounted as typeof disk;
    input = await images(COUNT);
  });
  after(() => disk?.unmount());
  afterEach(() => {
    disk?.resize('1m');
    for (const f of fs.readdirSync(disk?.dir ?? tmpDir())) fs.rmSync(path.join(disk.dir, f), { recursive: true, force: true });
  });

  it('writeAtomic: ENOSPC is E_IO naming the file, nothing left under its name or a temporary one', () => {
    const file = path.join(disk.dir, 'big.bin');
    const piece = new Uint8Array(300_000).fill(7);
    assert.throws(() => writeAtomic(file, (out) => { for (let i = 0; i < 5; i++) out.write(piece); }),
      (e: unknown) => e instanceof VggError && e.code === 'E_IO' && e.message.includes(file) && /ENOSPC/.test(e.message));
    assert.deepEqual(fs.readdirSync(disk.dir), []);
  });

  it('vgg run --out on a full disk exits 1 with E_IO and leaves no file', () => {
    const out = path.join(disk.dir, 'blobs.safetensors');
    // conv1_1 of the 2-image 224x224 batch: 2 x 4 x 224 x 224 floats, 1.6 MB.
    const r = vgg(['run', '--weights', WEIGHTS, '--input', fixture('input-224.safetensors'), '--outputs', 'conv1_1', '--out', out, '--threads', '2']);
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /E_IO/);
    assert.ok(r.stderr.includes(out), r.stderr);
    assert.doesNotMatch(r.stderr, /wrote/);
    assert.deepEqual(fs.readdirSync(disk.dir), []);
  });

  it('vgg extract on a full disk keeps its journal; --resume, once there is room, writes the bytes of an uninterrupted run', () => {
    const reference = path.join(tmpDir(), 'reference.safetensors');
    const ok = vgg(extractArgs(input, reference));
    assert.equal(ok.status, 0, ok.stderr);

    const out = path.join(disk.dir, 'features.safetensors');
    const full = vgg(extractArgs(input, out));
    assert.equal(full.status, 1, full.stderr);
    assert.match(full.stderr, /E_IO/);
    assert.ok(full.stderr.includes(out), full.stderr);
    assert.deepEqual(fs.readdirSync(disk.dir), ['features.safetensors.partial'], 'the journal and nothing else');

    disk.resize('4m');
    const resumed = vgg(extractArgs(input, out, '--resume'));
    assert.equal(resumed.status, 0, resumed.stderr);
    assert.match(resumed.stderr, new RegExp(`resuming: ${COUNT} images already done`));
    assert.ok(fs.readFileSync(out).equals(fs.readFileSync(reference)), 'the same bytes as the uninterrupted run');
    assert.deepEqual(fs.readdirSync(disk.dir), ['features.safetensors']);
  });
});
