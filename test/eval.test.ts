import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadModel, type Model } from '../lib/model';
import { classify } from '../lib/tasks/classify';
import { evaluate, type EvalOptions, type EvalRecord } from '../lib/tasks/eval';
import { gridOffsets, posterior, type Protocol } from '../lib/tasks/protocols';
import { preprocess, preprocessSizes } from '../lib/images/preprocess';
import { classNames, synsetIds } from '../lib/images/classes';
import { VggError } from '../lib/errors';
import { tmpDir } from './helpers';

// Made by make_eval_reference.py (PyTorch, PIL): see its header.
const EVAL_FIXTURES = path.resolve(__dirname, '../../test/fixtures/eval');
const WEIGHTS = path.join(EVAL_FIXTURES, 'D16-1000.weights.safetensors'); // 1000 classes
const SAMPLES = path.resolve(__dirname, '../../samples');
const MAIN = path.resolve(__dirname, '../lib/cli/main.js');

interface Reference { scales: number[]; images: Record<string, Record<string, { top5: number[]; probs: number[]; margin: number }>> }
const REFERENCE = JSON.parse(fs.readFileSync(path.join(EVAL_FIXTURES, 'reference.json'), 'utf8')) as Reference;
/** The reference's cases as protocol options (center at its default single scale). */
const CASES: Record<string, { protocol: Protocol; flip?: boolean }> = {
  center: { protocol: 'center' },
  'center+flip': { protocol: 'center', flip: true },
  dense: { protocol: 'dense' },
  'dense+flip': { protocol: 'dense', flip: true },
  multicrop: { protocol: 'multicrop' },
  'dense+multicrop+flip': { protocol: 'dense+multicrop', flip: true },
};

const sample = (name: string) => path.join(SAMPLES, name);

/** Every class's posterior by the given protocol. */
async function allProbs(model: Model, image: string, options: { protocol: Protocol; flip?: boolean; scales?: number[] }): Promise<Float64Array> {
  const prob = new Float64Array(model.info.classes);
  for (const c of await classify(model, image, { ...options, top: model.info.classes })) prob[c.index] = c.prob;
  return prob;
}

async function collect(model: Model, source: Parameters<typeof evaluate>[1], options?: EvalOptions) {
  const records: EvalRecord[] = [];
  const summary = await evaluate(model, source, { ...options, onRecord: (r) => { records.push(r); } });
  return { summary, records };
}

describe('eval', () => {
  let model: Model;
  before(async () => { model = await loadModel(WEIGHTS, { threads: 2 }); });
  after(() => model?.dispose());

  describe('protocols', () => {
    // The sample photos: portrait 240x320, landscape 600x400, square 256x256 (not resized at
    // Q = 256), 320x240, and 300x200, whose shorter side is below 224: like every image, it is
    // resized so that its shorter side is Q (enlarged here), so every crop fits. A scale below
    // 224 is refused instead (E_ARG, below).
    for (const [image, cases] of Object.entries(REFERENCE.images)) {
      it(`${image}: every protocol agrees with PyTorch (1% on its top-5 posteriors, same top-1 where its margin > 1e-3)`, async () => {
        for (const [name, expected] of Object.entries(cases)) {
          const { protocol } = CASES[name];
          const scales = protocol === 'center' ? undefined : REFERENCE.scales;
          const prob = await allProbs(model, sample(image), { ...CASES[name], scales });
          expected.top5.forEach((c, k) => {
            const rel = Math.abs(prob[c] - expected.probs[k]) / expected.probs[k];
            assert.ok(rel <= 0.01, `${image} ${name}: class ${c} ${prob[c]} vs PyTorch ${expected.probs[k]} (${(100 * rel).toFixed(2)}%)`);
          });
          const top1 = prob.indexOf(Math.max(...prob));
          if (expected.margin > 1e-3) assert.equal(top1, expected.top5[0], `${image} ${name}: top-1`);
        }
      });
    }

    it('places the 5x5 grid at round(i (W - 224) / 4), round(j (H - 224) / 4), halves to even', () => {
      const grid = gridOffsets(341, 256);
      assert.equal(grid.length, 25);
      assert.deepEqual([...new Set(grid.map(([x]) => x))], [0, 29, 58, 88, 117]); // 29.25, 58.5, 87.75
      assert.deepEqual([...new Set(grid.map(([, y]) => y))], [0, 8, 16, 24, 32]);
      assert.deepEqual(grid.slice(0, 6), [[0, 0], [0, 8], [0, 16], [0, 24], [0, 32], [29, 0]]);
      assert.deepEqual(gridOffsets(226, 224).map(([x]) => x).filter((_, k) => k % 5 === 0), [0, 0, 1, 2, 2]); // 0.5 -> 0, 1.5 -> 2
      assert.deepEqual(gridOffsets(224, 224), Array.from({ length: 25 }, () => [0, 0]));
    });

    it('multicrop: the mean over scales of the fixed head on each grid crop and its mirror, whatever the batch size', async () => {
      const scales = [256, 240];
      const byHand = new Float64Array(1000);
      for (const size of scales) {
        const image = await preprocess(sample('coffee.jpg'), { size, crop: false });
        const [, , h, w] = image.shape;
        // The 25 crops cut by hand, their mirrors by model.run's flip.
        const crops = new Float32Array(25 * 3 * 224 * 224);
        gridOffsets(w, h).forEach(([x, y], n) => {
          for (let c = 0; c < 3; c++) {
            for (let r = 0; r < 224; r++) {
              const from = (c * h + y + r) * w + x;
              crops.set(image.data.subarray(from, from + 224), ((n * 3 + c) * 224 + r) * 224);
            }
          }
        });
        const { prob } = await model.run({ data: crops, shape: [25, 3, 224, 224] }, { head: 'fixed', flip: true });
        prob.data.forEach((p, i) => { byHand[i % 1000] += p / (25 * scales.length); });
      }
      const inputs = await preprocessSizes(sample('coffee.jpg'), scales, { crop: false });
      for (const batchSize of [50, 7, 100]) {
        const got = await posterior(model, inputs, { protocol: 'multicrop', scales, flip: false, batchSize });
        const worst = Math.max(...got.map((p, i) => Math.abs(p - byHand[i]) / Math.max(byHand[i], 1e-6)));
        assert.ok(worst < 1e-4, `batch ${batchSize}: ${worst}`);
      }
    });

    it('dense+multicrop is the mean of the two; flip changes dense, not multicrop (which mirrors always)', async () => {
      const inputs = await preprocessSizes(sample('city.jpg'), [256], { crop: false });
      const run = (protocol: Protocol, flip: boolean) => posterior(model, inputs, { protocol, scales: [256], flip, batchSize: 50 });
      const [dense, denseFlip, multi, multiFlip, both] = await Promise.all([
        run('dense', false), run('dense', true), run('multicrop', false), run('multicrop', true), run('dense+multicrop', true)]);
      assert.ok(dense.some((p, i) => Math.abs(p - denseFlip[i]) > 1e-4), 'flip changes dense');
      assert.deepEqual(multi, multiFlip);
      both.forEach((p, i) => assert.ok(Math.abs(p - (denseFlip[i] + multi[i]) / 2) < 1e-7, `class ${i}`));
    });
  });

  describe('error rates on labeled images', () => {
    let root: string;
    /** Per image, the class it is labeled with and whether that is top-1 / in the top-5. */
    const truth = new Map<string, { index: number; top1: boolean; top5: boolean }>();

    before(async () => {
      // Labels built from the fixture model's own center-crop predictions, so the answers are known:
      // city is labeled with its top class (margin checked), coffee with its third (a top-1 miss, a
      // top-5 hit) and fruit with its 500th (a miss both ways).
      const synsets = synsetIds(1000)!;
      const names = classNames(1000);
      root = path.join(tmpDir(), 'labeled');
      const place = async (image: string, rank: number, folderOf: (index: number) => string) => {
        const ranked = await classify(model, sample(image), { top: 1000 });
        if (rank === 0) assert.ok(ranked[0].prob - ranked[1].prob > 1e-3, 'a clear top-1');
        const { index } = ranked[rank];
        truth.set(image, { index, top1: rank === 0, top5: rank < 5 });
        const dir = path.join(root, folderOf(index));
        fs.mkdirSync(dir, { recursive: true });
        fs.copyFileSync(sample(image), path.join(dir, image));
        return index;
      };
      await place('city.jpg', 0, (i) => synsets[i]);
      await place('coffee.jpg', 2, (i) => synsets[i]);
      await place('fruit.jpg', 499, (i) => names[i]); // a class name, not a synset id
      const used = new Set([...truth.values()].map((t) => t.index));
      const spare = [...synsets.keys()].filter((i) => !used.has(i));
      fs.mkdirSync(path.join(root, synsets[spare[0]]));
      fs.writeFileSync(path.join(root, synsets[spare[0]], 'broken.jpg'), 'not a JPEG'); // unreadable
      fs.mkdirSync(path.join(root, synsets[spare[1]])); // an empty class
      fs.mkdirSync(path.join(root, 'n99999999')); // a synset id of no ImageNet class
      fs.copyFileSync(sample('landscape.jpg'), path.join(root, 'n99999999', 'landscape.jpg'));
      fs.copyFileSync(sample('texture.jpg'), path.join(root, 'loose.jpg')); // in no class folder
    });

    const expectedErrors = () => {
      const n = truth.size;
      return {
        top1: (100 * [...truth.values()].filter((t) => !t.top1).length) / n,
        top5: (100 * [...truth.values()].filter((t) => !t.top5).length) / n,
      };
    };

    it('class folders named by synset id or class name; unknown labels, empty classes and unreadable images counted apart', async () => {
      const { summary, records } = await collect(model, root, { batchSize: 2 });
      const { top1, top5 } = expectedErrors();
      assert.equal(summary.images, 3);
      assert.ok(Math.abs(summary.top1Error! - top1) < 1e-9 && Math.abs(summary.top5Error! - top5) < 1e-9, JSON.stringify(summary));
      assert.deepEqual([top1, top5].map(Math.round), [67, 33]);
      assert.deepEqual(summary.skipped, { unknownLabel: 2, emptyClasses: 1, unreadable: 1 });
      assert.equal(summary.labels, 'synset ids and class names');
      assert.equal(summary.protocol, 'center');
      assert.deepEqual(summary.scales, [256]);
      assert.equal(records.length, 7);
      for (const [image, t] of truth) {
        const record = records.find((r) => r.id.endsWith(`/${image}`))!;
        assert.equal(record.index, t.index);
        assert.equal(record.top!.length, 5);
        const expected = await classify(model, sample(image), { top: 5 });
        assert.deepEqual(record.top, expected.map((p) => p.index));
        record.probs!.forEach((p, k) => assert.ok(Math.abs(p - expected[k].prob) < 1e-6, `${image} prob ${k}`));
      }
      const skipped = Object.fromEntries(records.filter((r) => r.skipped).map((r) => [path.basename(r.id), r.skipped]));
      assert.equal(Object.keys(skipped).length, 4);
      assert.equal(skipped['broken.jpg'], 'unreadable');
      assert.equal(skipped['landscape.jpg'], 'unknown label');
      assert.equal(skipped['loose.jpg'], 'unknown label');
      assert.equal(records.find((r) => r.skipped === 'empty class')?.error, undefined);
      assert.equal(records.find((r) => r.skipped === 'unreadable')?.error?.code, 'E_IMAGE');
    });

    it('a CSV, TSV or whitespace list: labels as index, synset id or class name, paths from the list\'s folder', async () => {
      const label = (image: string, form: 'index' | 'synset' | 'name') => {
        const { index } = truth.get(image)!;
        return form === 'index' ? String(index) : form === 'synset' ? synsetIds(1000)![index] : classNames(1000)[index];
      };
      const rows: [string, string][] = [
        [`../${path.basename(root)}/${synsetIds(1000)![truth.get('city.jpg')!.index]}/city.jpg`, label('city.jpg', 'index')],
        [path.join(root, synsetIds(1000)![truth.get('coffee.jpg')!.index], 'coffee.jpg'), label('coffee.jpg', 'synset')],
        [path.join(root, classNames(1000)[truth.get('fruit.jpg')!.index], 'fruit.jpg'), label('fruit.jpg', 'name')],
        [path.join(root, 'loose.jpg'), 'not a class'],
        [path.join(root, 'missing.jpg'), '3'],
        [path.join(root, 'loose.jpg'), '1000'], // one past the last index
      ];
      const lists = path.join(path.dirname(root), 'lists');
      fs.mkdirSync(lists, { recursive: true });
      const forms = [
        ['val.csv', 'path,label\n' + rows.map(([p, l]) => `${p},${l}`).join('\n')],
        ['val.tsv', rows.map(([p, l]) => `${p}\t${l}`).join('\r\n') + '\r\n'],
        // A whitespace list cannot hold a label with a space: fruit's class by its synset id there.
        ['val.txt', rows.map(([p, l]) => `${p} ${l === label('fruit.jpg', 'name') ? label('fruit.jpg', 'synset') : l}`).join('\n')],
      ];
      for (const [name, text] of forms) {
        const file = path.join(lists, name);
        fs.writeFileSync(file, text);
        const { summary, records } = await collect(model, file, { batchSize: 4 });
        const { top1, top5 } = expectedErrors();
        assert.equal(summary.images, 3, name);
        assert.ok(Math.abs(summary.top1Error! - top1) < 1e-9 && Math.abs(summary.top5Error! - top5) < 1e-9, name);
        assert.equal(summary.labels, 'as listed');
        // 'not a class' in the .txt list is the path 'loose.jpg not a' with the label 'class': unknown all the same.
        assert.deepEqual(summary.skipped, { unknownLabel: 2, emptyClasses: 0, unreadable: 1 }, name);
        assert.equal(records.find((r) => r.skipped === 'unreadable')?.error?.code, 'E_IO');
      }
    });

    it('folders that are neither synset ids nor class names are classes 0..k-1 in sorted order, and the summary says so', async () => {
      const dir = path.join(tmpDir(), 'plain');
      for (const [folder, image] of [['b-dogs', 'city.jpg'], ['a-cats', 'coffee.jpg']]) {
        fs.mkdirSync(path.join(dir, folder), { recursive: true });
        fs.copyFileSync(sample(image), path.join(dir, folder, image));
      }
      const { summary, records } = await collect(model, dir);
      assert.equal(summary.labels, 'folder order');
      assert.match(summary.note!, /the 2 class folders are neither synset ids nor class names of this model: folder i in sorted order is class i \(the model has 1000 classes\)/);
      assert.deepEqual(records.map((r) => [path.basename(r.id), r.index]), [['coffee.jpg', 0], ['city.jpg', 1]]);
    });

    it('labeled Buffers and paths from an iterable; center crops batched give what classify gives', async () => {
      const images = ['city.jpg', 'coffee.jpg', 'fruit.jpg', 'landscape.jpg', 'texture.jpg'];
      const source = images.map((image, i) => ({ image: i % 2 ? fs.readFileSync(sample(image)) : sample(image), label: i }));
      for (const flip of [false, true]) {
        const { records } = await collect(model, source, { batchSize: 2, flip });
        assert.deepEqual(records.map((r) => r.id), [sample('city.jpg'), 'buffer:1', sample('fruit.jpg'), 'buffer:3', sample('texture.jpg')]);
        for (const [i, record] of records.entries()) {
          const expected = await classify(model, sample(images[i]), { top: 5, flip });
          assert.deepEqual(record.top, expected.map((p) => p.index));
          record.probs!.forEach((p, k) => assert.ok(Math.abs(p - expected[k].prob) < 1e-6));
        }
      }
    });

    it('streams: pulls the source only as far ahead as its bounded queues, however long it is', async () => {
      const bytes = fs.readFileSync(sample('fruit.jpg'));
      let pulled = 0, done = 0, ahead = 0, read = 0, readAhead = 0;
      const ids: string[] = [];
      async function* many() {
        for (let i = 0; i < 60; i++) {
          pulled++;
          yield { image: bytes, label: i };
        }
      }
      const summary = await evaluate(model, many(), {
        batchSize: 4, concurrency: 2,
        onRead: (id) => { read++; ids.push(id); },
        onRecord: (r) => { done++; ahead = Math.max(ahead, pulled - done); readAhead = Math.max(readAhead, read - done); assert.equal(r.id, ids[done - 1]); },
      });
      assert.equal(summary.images, 60);
      // onRead (progress's images under way) sees each entry once, in order, before its record: a batch's worth and more ahead.
      assert.equal(read, 60);
      assert.ok(readAhead > 4, `read only ${readAhead} ahead of the records`);
      // decoding (2) + a batch being filled (4) + two batches in flight (8) + the batch going out (4)
      assert.ok(ahead <= 19, `${ahead} images held at once`);
    });

    it('E_ARG for bad options, E_IO for a missing source, before anything runs', async () => {
      const bad: [unknown, unknown, RegExp][] = [
        [root, { protocol: 'center', scales: [256, 384] }, /center protocol takes one scale/],
        [root, { protocol: 'multicrop', scales: [160] }, /shorter sides from 224 to 1024 pixels/],
        [root, { batchSize: 0 }, /a positive integer for options.batchSize/],
        [root, { preset: 'keras' }, /options.preset/],
        [root, { onRecord: 'print' }, /a function for options.onRecord/],
        [root, { onRead: true }, /a function for options.onRead/],
        [root, { top: 1 }, /Unknown option options.top/],
        [path.join(root, 'loose.jpg'), {}, /expected a folder of class folders, or a .csv, .tsv or .txt list/],
        [path.join(root, 'n99999999'), {}, /has no class folders/],
        [42, {}, /a folder or list path, or an \(async\) iterable of \{ image, label \} for source/],
      ];
      for (const [source, options, message] of bad) {
        await assert.rejects(evaluate(model, source as string, options as EvalOptions), (e: unknown) => {
          assert.ok(e instanceof VggError && e.code === 'E_ARG', String(e));
          assert.match(e.message, message);
          return true;
        });
      }
      await assert.rejects(evaluate(model, path.join(root, 'nowhere')), /E_IO|cannot read labeled images/);
      await assert.rejects(evaluate(model, [{ image: 7, label: 1 }] as never), /source item 0/);
    });

    describe('vgg eval', () => {
      const vgg = (...args: string[]) => spawnSync(process.execPath, [MAIN, 'eval', ...args], { encoding: 'utf8', env: { ...process.env, VGG_DEBUG: '' } });

      it('--json: the summary evaluate() gives; --out: a line per image and per skipped entry; exit 2 when some were skipped', async () => {
        const out = path.join(tmpDir(), 'predictions.jsonl');
        const r = vgg(root, '--weights', WEIGHTS, '--protocol', 'dense+multicrop', '--scales', '256', '--flip', '--threads', '2', '--json', '--out', out);
        assert.equal(r.status, 2, r.stderr);
        const summary = JSON.parse(r.stdout);
        const { summary: expected, records } = await collect(model, root, { protocol: 'dense+multicrop', scales: [256], flip: true });
        for (const key of ['protocol', 'scales', 'flip', 'images', 'top1Error', 'top5Error', 'skipped', 'labels']) assert.deepEqual(summary[key], expected[key as keyof typeof expected], key);
        assert.ok(summary.imagesPerSecond > 0);
        const lines = fs.readFileSync(out, 'utf8').trimEnd().split('\n').map((l) => JSON.parse(l));
        assert.equal(lines.length, 7);
        lines.forEach((line, i) => {
          assert.equal(line.path, records[i].id);
          if (records[i].skipped) assert.equal(line.skipped, records[i].skipped);
          else {
            assert.deepEqual([line.label, line.top5], [records[i].index, records[i].top]);
            line.probs.forEach((p: number, k: number) => assert.ok(Math.abs(p - records[i].probs![k]) < 1e-6));
          }
        });
        assert.match(lines.find((l) => l.skipped === 'unreadable').error, /^E_IMAGE: cannot decode image .*broken\.jpg/);
        assert.deepEqual(fs.readdirSync(path.dirname(out)), ['predictions.jsonl']); // no temporary file left
      });

      it('prints the summary as a table, with the skipped entries by kind', () => {
        const r = vgg(root, '--weights', WEIGHTS, '--threads', '2', '--batch', '3');
        assert.equal(r.status, 2, r.stderr);
        assert.match(r.stdout, /^protocol +scales +flip +images +skipped +top-1 error +top-5 error +images\/s\ncenter +256 +no +3 +4 +66\.67% +33\.33% +\d+\.\d\d\nskipped: 2 unknown label, 1 empty class, 1 unreadable\n$/);
      });

      it('E_ARG naming the flag before loading the weights; E_IO for an --out that cannot be written', () => {
        let r = vgg(root, '--weights', 'none.safetensors', '--protocol', 'multicrop', '--scales', '128');
        assert.equal(r.status, 1);
        assert.match(r.stderr, /^vgg: E_ARG: Expected a non-empty array of shorter sides from 224 to 1024 pixels .* for --scales but received an array of length 1\n$/);
        r = vgg(root, '--weights', WEIGHTS, '--protocol', 'tencrop');
        assert.equal(r.status, 1);
        assert.match(r.stderr, /^vgg: E_ARG: option '--protocol <name>' argument 'tencrop' is invalid/);
        r = vgg(root, '--weights', WEIGHTS, '--out', path.join(root, 'no-dir', 'p.jsonl'));
        assert.equal(r.status, 1);
        assert.match(r.stderr, /^vgg: E_IO: cannot write .*p\.jsonl: ENOENT\n$/);
      });
    });
  });
});
