import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { classNames } from '../lib/images/classes';
import { classify, type ClassifyOptions } from '../lib/tasks/classify';
import { VggError } from '../lib/errors';
import { loadModel, type Model } from '../lib/model';
import { preprocess } from '../lib/images/preprocess';
import { fixture, readTensors } from './helpers';

const COFFEE = fixture('images/coffee.png');
const WEIGHTS = fixture('D.weights.safetensors'); // 10 classes
const main = path.resolve(__dirname, '../lib/cli/main.js');

/** Absolute differences within `tol`, element by element. */
function assertNear(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number, what: string) {
  assert.equal(actual.length, expected.length, what);
  for (let i = 0; i < expected.length; i++) assert.ok(Math.abs(actual[i] - expected[i]) <= tol, `${what}[${i}]: ${actual[i]} vs ${expected[i]}`);
}

describe('classify', () => {
  let model: Model;
  before(async () => { model = await loadModel(WEIGHTS, { threads: 2 }); });
  after(() => model.dispose());

  it('returns the top classes, most probable first, with the probabilities model.run gives', async () => {
    const top = await model.classify(COFFEE, { top: 4 });
    assert.equal(top.length, 4);
    const { prob } = await model.run(await preprocess(COFFEE), { outputs: ['prob'] });
    const order = [...prob.data.keys()].sort((a, b) => prob.data[b] - prob.data[a]);
    assert.deepEqual(top.map((p) => p.index), order.slice(0, 4));
    for (const p of top) {
      assert.equal(p.label, `class_${p.index}`); // not a 1000-class model: no ImageNet names
      assert.equal(p.prob, prob.data[p.index]);
    }
    assert.ok(top.reduce((s, p) => s + p.prob, 0) <= 1 + 1e-6);
  });

  it('agrees with PyTorch on coffee.png run through torchvision preprocessing', async () => {
    const expected = readTensors(fixture('images/coffee-D.io.safetensors')).prob.data;
    const all = await model.classify(COFFEE, { top: 100 }); // more than there are classes: all 10
    assert.equal(all.length, 10);
    const byIndex = [...all].sort((a, b) => a.index - b.index).map((p) => p.prob);
    // The inputs differ by resampling alone (mean 0.004 in normalized units): so do the posteriors, slightly.
    assertNear(byIndex, expected, 1e-3, 'prob'); // measured: 2.4e-4
  });

  it('dense: the mean over scales of the dense head posteriors, each at shorter side Q, uncropped', async () => {
    for (const flip of [false, true]) {
      const scales = [224, 320];
      const got = await classify(model, COFFEE, { dense: true, scales, flip, top: 10 });
      const byHand = new Float32Array(10);
      for (const size of scales) {
        const input = await preprocess(COFFEE, { size, crop: false });
        const { prob } = await model.run(input, { head: 'dense', flip });
        prob.data.forEach((p, i) => { byHand[i] += p / scales.length; });
      }
      assertNear([...got].sort((a, b) => a.index - b.index).map((p) => p.prob), byHand, 1e-6, `flip ${flip}`);
    }
  });

  it('dense scales default to the paper\'s 256, 384, 512; caffe preset changes the input', async () => {
    const byDefault = await model.classify(COFFEE, { dense: true });
    const explicit = await model.classify(COFFEE, { dense: true, scales: [512, 256, 384] });
    assertNear(byDefault.map((p) => p.prob), explicit.map((p) => p.prob), 1e-6, 'default scales');
    const caffe = await model.classify(COFFEE, { preset: 'caffe', top: 10 });
    assert.notDeepEqual(caffe, await model.classify(COFFEE, { top: 10 }));
  });

  it('names the 1000 ImageNet classes, from the file shipped in data/', () => {
    const names = classNames(1000);
    assert.equal(names.length, 1000);
    assert.equal(names[0], 'tench');
    assert.equal(names[999], 'toilet tissue');
    assert.deepEqual(classNames(3), ['class_0', 'class_1', 'class_2']);
  });

  const bad: [unknown, RegExp][] = [
    [{ top: 0 }, /positive integer for options.top but received 0/],
    [{ dense: 'yes' }, /a boolean for options.dense/],
    [{ scales: [256, 384] }, /the center protocol takes one scale, not 2 \(options.scales\)/],
    [{ dense: true, scales: [] }, /non-empty array of shorter sides from 224 to 1024 pixels .* for options.scales/],
    [{ dense: true, scales: [256, 1.5] }, /non-empty array of shorter sides from 224 to 1024 pixels .* for options.scales/],
    [{ protocol: 'multicrop', scales: [200] }, /shorter sides from 224 to 1024 pixels \(no 224x224 crop fits a smaller image.* but received an array of length 1/],
    [{ protocol: 'dense', scales: [256, 256] }, /scales without repeats for options.scales/],
    [{ protocol: 'tencrop' }, /one of center, dense, multicrop, dense\+multicrop for options.protocol/],
    [{ dense: true, protocol: 'multicrop' }, /options.dense is protocol 'dense'; it contradicts options.protocol "multicrop"/],
    [{ flip: 1 }, /a boolean for options.flip/],
    [{ preset: 'keras' }, /options.preset/],
    [{ topk: 5 }, /Unknown option options.topk/],
  ];
  for (const [options, message] of bad) {
    it(`E_ARG: ${message.source}`, () => assert.rejects(model.classify(COFFEE, options as ClassifyOptions), (e: unknown) => {
      assert.ok(e instanceof VggError && e.code === 'E_ARG', String(e));
      assert.match(e.message, message);
      return true;
    }));
  }

  describe('vgg classify', () => {
    const vgg = (...args: string[]) => spawnSync(process.execPath, [main, 'classify', ...args], { encoding: 'utf8', env: { ...process.env, VGG_DEBUG: '' } });

    it('prints the top classes of each image, as JSON lines with --json', async () => {
      const r = vgg(COFFEE, COFFEE, '--weights', WEIGHTS, '--top', '3', '--dense', '--scales', '256,384', '--flip', '--threads', '2', '--json');
      assert.equal(r.status, 0, r.stderr);
      const expected = await model.classify(COFFEE, { top: 3, dense: true, scales: [256, 384], flip: true });
      const lines = r.stdout.trimEnd().split('\n').map((l) => JSON.parse(l));
      assert.deepEqual(lines, [{ image: COFFEE, classes: expected }, { image: COFFEE, classes: expected }]);
    });

    it('prints text: the image, then one line per class', () => {
      const r = vgg(COFFEE, '--weights', WEIGHTS, '--top', '2', '--threads', '2');
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`^${COFFEE.replace(/[.]/g, '\\.')}\n(  0\\.\\d{4}  class_\\d \\(\\d\\)\n){2}$`));
    });

    it('records an unreadable image in one line, goes on with the others, and exits 2', () => {
      const r = vgg(__filename, COFFEE, '--weights', WEIGHTS, '--top', '1', '--threads', '2');
      assert.equal(r.status, 2, r.stderr);
      assert.match(r.stderr, new RegExp(`^vgg classify: ${__filename.replace(/[.]/g, '\\.')}: E_IMAGE: cannot decode image .*classify\\.test\\.js: .*\n`
        + 'vgg classify: 2 images, 1 failed, [\\d.]+ s, [\\d.]+ images/s\n$'));
      assert.match(r.stdout, /^.*coffee\.png\n  0\.\d{4}  class_\d \(\d\)\n$/);
    });

    it('--json: one object per image, a failed one with its error; --quiet: nothing else on stderr', () => {
      const r = vgg(COFFEE, __filename, COFFEE, '--weights', WEIGHTS, '--top', '1', '--threads', '2', '--json', '--quiet');
      assert.equal(r.status, 2, r.stderr);
      const lines = r.stdout.trimEnd().split('\n').map((l) => JSON.parse(l));
      assert.deepEqual(lines.map((l) => [l.image, l.classes?.length, l.error?.code]), [[COFFEE, 1, undefined], [__filename, undefined, 'E_IMAGE'], [COFFEE, 1, undefined]]);
      assert.match(lines[1].error.message, /cannot decode image/);
      assert.equal(r.stderr.split('\n').filter((l) => l !== '').length, 1, r.stderr); // the failed image's line only
    });

    it('E_ARG, naming the flag, for two --scales with the center protocol, before loading the weights', () => {
      const r = vgg(COFFEE, '--weights', 'no-such.safetensors', '--scales', '256,384');
      assert.equal(r.status, 1);
      assert.equal(r.stderr, 'vgg: E_ARG: the center protocol takes one scale, not 2 (--scales); multi-scale evaluation is dense or multicrop\n');
    });
  });
});
