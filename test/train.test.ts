import { strict as assert } from 'node:assert';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import sharp from 'sharp';
import { loadModel } from '../lib/model';
import { trainClassifier, type TrainOptions, type TrainSummary } from '../lib/train';
import { preprocess } from '../lib/images/preprocess';
import { packWeights } from '../lib/tasks/pack';
import { createServer } from '../lib/serve';
import { VggError } from '../lib/errors';
import { fixture, prng, readTensors, repack, tmpDir, withTicker, writeTemp } from './helpers';

const MAIN = path.resolve(__dirname, '../lib/cli/main.js');
const WEIGHTS = fixture('D.weights.safetensors'); // VGG16's layout at small width: fc_hidden 256, 10 classes
const vgg = (args: string[]) => spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8', env: { ...process.env, VGG_DEBUG: '' } });

/** Four classes a person tells apart at a glance, with noise, sizes and phases drawn from a seeded stream. */
const PATTERNS: Record<string, (x: number, y: number, phase: number, r: () => number) => number[]> = {
  blue: (_x, _y, _p, r) => [40 * r(), 40 * r(), 200 + 50 * r()],
  horizontal: (_x, y, p) => (Math.floor((y + p) / 6) % 2 ? [230, 230, 230] : [20, 20, 20]),
  red: (_x, _y, _p, r) => [200 + 50 * r(), 40 * r(), 40 * r()],
  vertical: (x, _y, p) => (Math.floor((x + p) / 6) % 2 ? [230, 230, 230] : [20, 20, 20]),
};
const CLASSES = Object.keys(PATTERNS);
const PER_CLASS = 40;

/** Writes PER_CLASS small PNGs per class into root/<class>/, returns the paths by class. */
async function makeImages(root: string, seed = 7): Promise<Record<string, string[]>> {
  const r = prng(seed);
  const out: Record<string, string[]> = {};
  for (const name of CLASSES) {
    fs.mkdirSync(path.join(root, name), { recursive: true });
    out[name] = [];
    for (let i = 0; i < PER_CLASS; i++) {
      const [w, h, phase] = [48 + Math.floor(r() * 32), 48 + Math.floor(r() * 32), Math.floor(r() * 12)];
      const pixels = Buffer.alloc(w * h * 3);
      for (let y = 0; y < h; y++) {
        for (let x = 0; x < w; x++) {
          const c = PATTERNS[name](x, y, phase, r);
          for (let k = 0; k < 3; k++) pixels[(y * w + x) * 3 + k] = Math.max(0, Math.min(255, c[k] + (r() - 0.5) * 60));
        }
      }
      const file = path.join(root, name, `${String(i).padStart(2, '0')}.png`);
      await sharp(pixels, { raw: { width: w, height: h, channels: 3 } }).png().toFile(file);
      out[name].push(file);
    }
  }
  return out;
}

/** Settings that learn in few steps on 144 training images (the paper's 0.01 needs many more). */
const QUICK = ['--lr', '0.1', '--batch', '16', '--patience', '3', '--threads', '2'];
const quick: Partial<TrainOptions> = { learningRate: 0.1, batchSize: 16, patience: 3, load: { threads: 2 } };

const jsonLines = (stdout: string) => stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);

async function rejects(promise: Promise<unknown>, code: string, message: RegExp): Promise<void> {
  await assert.rejects(promise, (e: unknown) => {
    assert.ok(e instanceof VggError, String(e));
    assert.equal(e.code, code, e.message);
    assert.match(e.message, message);
    return true;
  });
}

describe('train', function () {
  this.timeout(60000);
  let dir: string;
  let set: string;
  let images: Record<string, string[]>;
  let cache: string;

  before(async () => {
    dir = tmpDir();
    set = path.join(dir, 'set');
    images = await makeImages(set);
    cache = path.join(dir, 'cache');
  });

  it('resumes caching after a kill: the cached images are not computed again', async () => {
    const out = path.join(dir, 'resumed.safetensors');
    const args = [MAIN, 'train', set, '--weights', WEIGHTS, '--out', out, '--cache', cache, '--epochs', '1', '--threads', '1'];
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => { stderr += d; });
    const exited = new Promise((resolve) => child.on('exit', resolve));
    const committed = () => (fs.existsSync(cache) ? fs.readdirSync(cache) : [])
      .flatMap((d) => fs.readdirSync(path.join(cache, d)).filter((f) => /^\d+\.json$/.test(f))).length;
    try {
      for (let waited = 0; committed() === 0; waited += 50) {
        assert.ok(waited < 30000, `nothing cached after 30 s: ${stderr}`);
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      child.kill('SIGKILL');
      await exited;
    } finally {
      child.kill('SIGKILL');
    }
    assert.ok(!fs.existsSync(out));
    const r = vgg(['train', set, '--weights', WEIGHTS, '--out', out, '--cache', cache, '--epochs', '1', '--threads', '2', '--json']);
    assert.equal(r.status, 0, r.stderr);
    const summary = jsonLines(r.stdout).pop() as unknown as TrainSummary;
    const total = CLASSES.length * PER_CLASS;
    assert.ok(summary.cache.reused >= 32 && summary.cache.reused < total, `reused ${summary.cache.reused}`);
    assert.equal(summary.cache.reused + summary.cache.computed, total);
  });

  it(`is useful: fc8 on the fixture's fc7 features tells ${CLASSES.length} generated classes apart, far above chance`, async () => {
    const epochs: number[] = [];
    const summary = await trainClassifier(WEIGHTS, set, { out: path.join(dir, 'useful.safetensors'), cache, ...quick, val: 0.25, onEpoch: (e) => epochs.push(e.valAccuracy) });
    assert.equal(summary.cache.computed, 0, 'everything came from the cache');
    assert.deepEqual(summary.classes, CLASSES);
    assert.deepEqual(summary.images, { train: 120, val: 40 }); // 10 of each class held out (0.25 of 40)
    // Chance is 25%; measured: 97.5% (39 of 40) at epoch 5, 75-87.5% in the epochs after it.
    assert.ok(summary.valAccuracy >= 75, `validation accuracy ${summary.valAccuracy}%`);
    assert.equal(summary.valAccuracy, Math.max(...epochs));
    assert.equal(summary.valAccuracy, epochs[summary.bestEpoch - 1]);
    // The learning rate drops by 10 after each 3 epochs without a better accuracy, and the 4th stall ends training.
    const rates = summary.epochs.map((e) => e.learningRate);
    assert.deepEqual([...new Set(rates)].map((v) => Number(v.toPrecision(3))), [0.1, 0.01, 0.001, 0.0001]);
    assert.equal(summary.stopped, 'stalled');
    assert.equal(summary.epochs.filter((e) => e.lrDropped).length, 3);
  });

  it('round trip: the weights name the classes for classify, and eval on the validation list gives the reported accuracy', async () => {
    const out = path.join(dir, 'birds.safetensors');
    const r = vgg(['train', set, '--weights', WEIGHTS, '--out', out, '--cache', cache, ...QUICK, '--json']);
    assert.equal(r.status, 0, r.stderr);
    const lines = jsonLines(r.stdout);
    const summary = lines.pop()!;
    assert.equal(lines.length, (summary.epochs as unknown[]).length, 'one JSON line per epoch, then the summary');
    assert.deepEqual(Object.keys(lines[0]).sort(), ['best', 'epoch', 'learningRate', 'loss', 'lrDropped', 'seconds', 'trainAccuracy', 'valAccuracy', 'valLoss']);
    assert.equal(summary.valList, path.join(dir, 'birds.val.tsv'));

    const tensors = readTensors(out);
    const source = readTensors(WEIGHTS);
    for (const name of Object.keys(source).filter((n) => n.startsWith('features.'))) assert.deepEqual(tensors[name].data, source[name].data, name);
    for (const name of ['classifier.0.weight', 'classifier.3.bias']) assert.deepEqual(tensors[name].data, source[name].data, `${name} frozen`);
    assert.deepEqual(tensors['classifier.6.weight'].shape, [4, 256]);

    const model = await loadModel(out, { threads: 2 });
    try {
      assert.deepEqual(model.info.classNames, CLASSES);
      assert.equal(model.info.classes, 4);
      assert.equal(model.info.preset, 'torchvision');
      assert.equal((await model.classify(images.vertical[0], { top: 1 }))[0].label, 'vertical');
      const app = createServer(model);
      try {
        const url = await app.listen({ port: 0, host: '127.0.0.1' });
        const res = await fetch(`${url}/v1/classify?top=1`, { method: 'POST', body: fs.readFileSync(images.vertical[0]), headers: { 'content-type': 'image/png' } });
        assert.equal(res.status, 200);
        assert.equal(((await res.json()) as { classes: { label: string }[] }).classes[0].label, 'vertical', 'vgg serve names the new classes');
      } finally {
        await app.close();
      }
    } finally {
      await model.dispose();
    }
    const packed = path.join(dir, 'birds.packed');
    await packWeights(out, packed, { shapes: [[1, 224, 224, 'fixed']], threads: 2 });
    const fromPacked = await loadModel(packed, { threads: 2 });
    try {
      assert.deepEqual(fromPacked.info.classNames, CLASSES, 'vgg pack keeps the class names');
    } finally {
      await fromPacked.dispose();
    }
    const classified = vgg(['classify', images.red[3], '--weights', out, '--top', '4', '--threads', '2']);
    assert.equal(classified.status, 0, classified.stderr);
    for (const name of CLASSES) assert.match(classified.stdout, new RegExp(` ${name} \\(${CLASSES.indexOf(name)}\\)`));

    assert.match(vgg(['info', '--weights', out]).stdout, /\nclasses +blue, horizontal, red, vertical\n/);
    const evaluated = vgg(['eval', summary.valList as string, '--weights', out, '--json', '--threads', '2']);
    assert.equal(evaluated.status, 0, evaluated.stderr);
    const e = JSON.parse(evaluated.stdout) as { images: number; top1Error: number };
    assert.equal(e.images, 16);
    assert.ok(Math.abs(e.top1Error - (100 - (summary.valAccuracy as number))) < 1e-9, `eval ${e.top1Error}% vs training ${summary.valAccuracy}%`);
  });

  it('is deterministic for a seed, and another seed trains otherwise', async () => {
    const run = (name: string, seed: number) => trainClassifier(WEIGHTS, set, { out: path.join(dir, name), cache, ...quick, epochs: 3, seed });
    const [a, b, c] = [await run('a.safetensors', 5), await run('b.safetensors', 5), await run('c.safetensors', 6)];
    for (const s of [a, b, c]) assert.equal(s.cache.computed, 0, 'another split of the same images is in the cache');
    assert.ok(fs.readFileSync(path.join(dir, 'a.safetensors')).equals(fs.readFileSync(path.join(dir, 'b.safetensors'))));
    assert.deepEqual(a.epochs.map((e) => e.loss), b.epochs.map((e) => e.loss));
    assert.notDeepEqual(a.epochs.map((e) => e.loss), c.epochs.map((e) => e.loss));
    assert.notDeepEqual(a.validation, c.validation, 'the split is seeded too');
  });

  it('does not block the event loop while it trains', async () => {
    // From the cache: the epochs' batches (cache reads, steps, validation) and the best weights kept.
    const { result, ms, maxLag, ticks } = await withTicker(() => trainClassifier(WEIGHTS, set, {
      out: path.join(dir, 'loop.safetensors'), cache, ...quick, epochs: 200, patience: 1000,
    }));
    assert.equal(result.cache.computed, 0);
    assert.ok(ms >= 200, `training took ${ms.toFixed(0)} ms, too short to show the event loop is free`);
    // A 10 ms timer: a loop blocked by the training would tick far less often than every 30 ms.
    assert.ok(ticks >= ms / 30, `${ticks} ticks in ${ms.toFixed(0)} ms`);
    assert.ok(maxLag < 500, `the event loop waited ${maxLag.toFixed(0)} ms`);
  });

  it('augments with flips and scale jittering as cached views of each image', async () => {
    const list = path.join(dir, 'few.csv');
    fs.writeFileSync(list, CLASSES.flatMap((c) => images[c].slice(0, 5).map((f) => `${f},${c}`)).join('\n'));
    const summary = await trainClassifier(WEIGHTS, list, {
      out: path.join(dir, 'augmented.safetensors'), ...quick, epochs: 2, augment: ['flip', 'scale'], views: 3, val: 0.2,
    });
    assert.equal(summary.views, 3);
    assert.deepEqual(summary.images, { train: 16, val: 4 });
    assert.equal(summary.cache.computed, 20 * 3);
    assert.deepEqual(summary.classes, CLASSES);

    const plain = await preprocess(images.red[0]);
    const mirrored = await preprocess(images.red[0], { flip: true });
    assert.deepEqual(mirrored.data.subarray(0, 224), plain.data.subarray(0, 224).slice().reverse());
    const corner = await preprocess(images.red[0], { size: 300, cropAt: [0, 0] });
    const far = await preprocess(images.red[0], { size: 300, cropAt: [1, 1] });
    assert.notDeepEqual(corner.data, far.data);
  });

  it('validates on images of their own with --val-dir, whose classes must be the training images\'', async () => {
    const list = path.join(dir, 'train.csv');
    fs.writeFileSync(list, CLASSES.flatMap((c) => images[c].slice(0, 5).map((f) => `${f},${c}`)).join('\n'));
    const valDir = path.join(dir, 'val');
    for (const c of CLASSES) {
      fs.mkdirSync(path.join(valDir, c), { recursive: true });
      for (const f of images[c].slice(30, 32)) fs.copyFileSync(f, path.join(valDir, c, path.basename(f)));
    }
    const summary = await trainClassifier(WEIGHTS, list, { out: path.join(dir, 'valdir.safetensors'), ...quick, epochs: 2, valSource: valDir });
    assert.deepEqual(summary.images, { train: 20, val: 8 });
    assert.equal(summary.cache.computed, 28);
    assert.deepEqual(summary.validation.map((v) => v.image), CLASSES.flatMap((c) => images[c].slice(30, 32).map((f) => path.join(valDir, c, path.basename(f)))));
    fs.mkdirSync(path.join(valDir, 'green'));
    fs.copyFileSync(images.red[0], path.join(valDir, 'green', 'x.png'));
    await rejects(trainClassifier(WEIGHTS, list, { out: path.join(dir, 'valdir.safetensors'), valSource: valDir }), 'E_ARG',
      /the validation images: .*green\/x\.png is of class "green", which the training images do not have \(blue, horizontal, red, vertical\)/);
  });

  it('trains new fc6 and fc7 on pool5 for weights without them (--fc-hidden), and refuses other layers there', async () => {
    const notop = writeTemp(repack(WEIGHTS, (tensors, meta) => {
      for (const name of [...tensors.keys()]) if (name.startsWith('classifier.')) tensors.delete(name);
      delete meta.metadata;
    }), 'notop.safetensors');
    const list = path.join(dir, 'notop.csv');
    fs.writeFileSync(list, CLASSES.flatMap((c) => images[c].slice(0, 4).map((f) => `${f},${c}`)).join('\n'));
    const out = path.join(dir, 'fresh.safetensors');
    await rejects(trainClassifier(notop, list, { out, ...quick }), 'E_ARG', /--layers fc8: .*notop\.safetensors has no fc6 and fc7 .*--layers fc6-fc8 --fc-hidden N/);
    await rejects(trainClassifier(notop, list, { out, ...quick, layers: 'fc6-fc8' }), 'E_ARG', /--fc-hidden N/);
    await rejects(trainClassifier(WEIGHTS, list, { out, ...quick, layers: 'fc6-fc8', fcHidden: 64 }), 'E_ARG', /--fc-hidden 64: .*has fc6 and fc7 \(256 wide\)/);
    const summary = await trainClassifier(notop, list, { out, ...quick, layers: 'fc6-fc8', fcHidden: 64, epochs: 2 });
    assert.equal(summary.input, 'pool5');
    const tensors = readTensors(out);
    assert.deepEqual(tensors['classifier.0.weight'].shape, [64, 32 * 7 * 7]);
    assert.deepEqual(tensors['classifier.6.weight'].shape, [4, 64]);
  });

  describe('bad input', () => {
    const out = () => path.join(dir, 'bad.safetensors');

    it('one class only', async () => {
      const root = path.join(dir, 'one');
      fs.mkdirSync(path.join(root, 'red'), { recursive: true });
      for (const f of images.red.slice(0, 3)) fs.copyFileSync(f, path.join(root, 'red', path.basename(f)));
      await rejects(trainClassifier(WEIGHTS, root, { out: out() }), 'E_ARG', /one class \(red\): a classifier needs at least 2/);
    });

    it('a class folder without images', async () => {
      const root = path.join(dir, 'empty');
      for (const c of ['red', 'blue']) fs.mkdirSync(path.join(root, c), { recursive: true });
      fs.copyFileSync(images.red[0], path.join(root, 'red', 'a.png'));
      await rejects(trainClassifier(WEIGHTS, root, { out: out() }), 'E_ARG', /class folder .*empty\/blue has no images/);
    });

    it('a list naming missing files', async () => {
      const list = path.join(dir, 'missing.csv');
      fs.writeFileSync(list, `${images.red[0]},red\nnot-there.png,blue\n`);
      await rejects(trainClassifier(WEIGHTS, list, { out: out() }), 'E_IO', /missing\.csv names .*not-there\.png, which cannot be read: ENOENT/);
    });

    it('--layers a packed or feature-only file lacks, and bad options, from the CLI', () => {
      const r = vgg(['train', set, '--weights', WEIGHTS, '--out', out(), '--layers', 'fc5']);
      assert.equal(r.status, 1);
      assert.match(r.stderr, /^vgg: E_ARG: option '--layers <layers>' argument 'fc5' is invalid/);
      const v = vgg(['train', set, '--weights', WEIGHTS, '--out', out(), '--val', '1.5']);
      assert.match(v.stderr, /^vgg: E_ARG: Expected a number from 0 to 1 \(exclusive\) for options\.val but received 1\.5/);
      const o = vgg(['train', set, '--weights', WEIGHTS, '--out', path.join(dir, 'x.pth')]);
      assert.match(o.stderr, /^vgg: E_ARG: options\.out .*x\.pth: the new weights are a \.safetensors file/);
    });
  });
});
