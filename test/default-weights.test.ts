import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { cacheDir, defaultWeights } from '../lib/weights/default-weights';
import type { VggError } from '../lib/errors';
import { openWeights } from '../lib/weights';
import { countParams } from '../lib/arch/topology';
import { tmpDir, writeTemp } from './helpers';

describe('default weights', () => {
  it('generates a full-size VGG16 once, then returns the cached file untouched', async function () {
    this.timeout(120000); // 553 MB written; about 2.5 s on the development machines
    const dir = tmpDir();
    const file = await defaultWeights({ cacheDir: dir, quiet: true });
    assert.equal(file, path.join(dir, 'vgg16-random-seed0.safetensors'));
    const { arch, naming, convs, fc } = await openWeights(file);
    assert.deepEqual([arch.arch, arch.batchNorm, arch.classes, naming], ['D', false, 1000, 'torchvision']);
    assert.equal(countParams(arch), 138357544);
    // torchvision's initialisation scale: conv1_1 kaiming over fan_out (sqrt(2 / (64 * 9))), fc N(0, 0.01).
    const std = (a: Float32Array) => Math.sqrt(a.reduce((s, v) => s + v * v, 0) / a.length);
    assert.ok(Math.abs(std(convs[0].weight!) / Math.sqrt(2 / 576) - 1) < 0.05, `conv1_1 std ${std(convs[0].weight!)}`);
    assert.ok(Math.abs(std(fc[2]!.weight!) / 0.01 - 1) < 0.01, `fc8 std ${std(fc[2]!.weight!)}`);

    // The cached call reuses the file: not rewritten (same inode, same mtime), no temp file made.
    const before = fs.statSync(file, { bigint: true });
    assert.equal(await defaultWeights({ cacheDir: dir, quiet: true }), file);
    const after = fs.statSync(file, { bigint: true });
    assert.deepEqual([after.ino, after.mtimeNs, after.size], [before.ino, before.mtimeNs, before.size]);
    assert.deepEqual(fs.readdirSync(dir), [path.basename(file)]);
  });

  it('removes the temp file a killed generation left, but not one still being written', async function () {
    this.timeout(120000);
    const dir = tmpDir();
    const stale = path.join(dir, '.vgg16-random-seed0.safetensors.999991.tmp');
    const live = path.join(dir, '.vgg16-random-seed0.safetensors.999992.tmp');
    fs.writeFileSync(stale, 'partial');
    fs.writeFileSync(live, 'partial');
    const hourAgo = new Date(Date.now() - 3600_000);
    fs.utimesSync(stale, hourAgo, hourAgo);
    const file = await defaultWeights({ cacheDir: dir, quiet: true });
    assert.deepEqual(fs.readdirSync(dir).sort(), [path.basename(live), path.basename(file)].sort());
  });

  it('says on stderr, unless quiet, that the weights are random, where they go and how big; an unwritable cache is E_IO naming VGGNET_CACHE', async () => {
    // A cache folder under a regular file cannot be made, which also spares this test 553 MB.
    const blocked = path.join(writeTemp(new Uint8Array(1), 'not-a-folder'), 'cache');
    const written: string[] = [];
    const write = process.stderr.write;
    process.stderr.write = ((s: string) => { written.push(s); return true; }) as typeof write;
    try {
      for (const quiet of [false, true]) {
        await assert.rejects(defaultWeights({ cacheDir: blocked, quiet }), (e: VggError) => e.code === 'E_IO' && /ENOTDIR; set VGGNET_CACHE to a folder you can write/.test(e.message));
      }
    } finally {
      process.stderr.write = write;
    }
    assert.deepEqual(written, [
      'vgg: no --weights given: using VGG16 with seeded random weights (features are meaningless; `vgg fetch vgg16` downloads real ones)\n',
      `vgg: writing them once to ${path.join(blocked, 'vgg16-random-seed0.safetensors')} (553 MB; VGGNET_CACHE chooses the folder)\n`,
    ]);
  });

  it('finds the cache in VGGNET_CACHE, else XDG_CACHE_HOME, else ~/.cache', () => {
    const saved = { VGGNET_CACHE: process.env.VGGNET_CACHE, XDG_CACHE_HOME: process.env.XDG_CACHE_HOME };
    try {
      Object.assign(process.env, { VGGNET_CACHE: '/a/vgg', XDG_CACHE_HOME: '/b' });
      assert.equal(cacheDir(), '/a/vgg');
      delete process.env.VGGNET_CACHE;
      assert.equal(cacheDir(), '/b/vggnet');
      delete process.env.XDG_CACHE_HOME;
      assert.equal(cacheDir(), path.join(os.homedir(), '.cache', 'vggnet'));
    } finally {
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
  });
});
