// The CPU precisions on every fixture: Winograd and bf16 against PyTorch's float64, int8 with a
// calibration from one input set checked on another (random inputs and a real photo).
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { calibrate } from '../lib/tasks/calibrate';
import { loadCalibration, writeCalibration, type Calibration } from '../lib/weights/calibration';
import { VggError } from '../lib/errors';
import { loadModel } from '../lib/model';
import { native } from '../lib/native';
import { writeSafetensors } from '../lib/weights/safetensors';
import type { Tensor } from '../lib/tensor';
import { featureLayers, type CfgItem } from '../lib/arch/topology';
import { archMetadata } from '../lib/weights/binding';
import { FIXTURES, fixture, prng, randomInput, readTensors, relError, tmpDir } from './helpers';

const manifest = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'manifest.json'), 'utf8')) as { cases: Record<string, unknown> };
const CASES = Object.keys(manifest.cases);
const weightsOf = (c: string) => fixture(`${c}.weights.safetensors`);

function cosine(a: Float32Array, b: Float32Array): number {
  let dot = 0, aa = 0, bb = 0;
  for (let i = 0; i < a.length; i++) { dot += a[i] * b[i]; aa += a[i] * a[i]; bb += b[i] * b[i]; }
  return dot / Math.sqrt(aa * bb);
}

async function rejects(p: Promise<unknown>, code: string, pattern: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => e instanceof VggError && e.code === code && pattern.test(e.message));
}

describe('CPU precisions', function () {
  this.timeout(120000);
  const input224 = () => readTensors(fixture('input-224.safetensors')).input;
  const input256 = () => readTensors(fixture('input-256x320.safetensors')).input;

  it('Winograd stays within 1e-3 of PyTorch on fc8 for every config, both heads', async () => {
    let worst = 0;
    for (const c of CASES) {
      const expected = readTensors(fixture(`${c}.io.safetensors`));
      const model = await loadModel(weightsOf(c), { winograd: true, threads: 2 });
      assert.equal(model.winograd, true);
      const fixed = await model.run(input224(), { outputs: ['fc8'] });
      const dense = await model.run(input256(), { outputs: ['fc8'], head: 'dense' });
      worst = Math.max(worst, relError(fixed.fc8.data, expected['224.fc8'].data), relError(dense.fc8.data, expected['256x320.dense.fc8'].data));
      await model.dispose();
    }
    assert.ok(worst <= 1e-3, `Winograd fc8 relative error ${worst}`);
  });

  it('bf16 stays within 3e-2 on fc8 and hands back float32 blobs', async () => {
    const warnings: string[] = [];
    const onWarning = (w: Error & { code?: string }) => { if (w.code === 'VGGNET_BF16_EMULATED') warnings.push(w.message); };
    process.on('warning', onWarning);
    for (const c of CASES) {
      const expected = readTensors(fixture(`${c}.io.safetensors`));
      const model = await loadModel(weightsOf(c), { precision: 'bf16', threads: 2 });
      const out = await model.run(input224(), { outputs: ['pool5', 'fc8', 'prob'] });
      assert.ok(out.pool5.data instanceof Float32Array);
      const err = relError(out.fc8.data, expected['224.fc8'].data);
      assert.ok(err <= 3e-2, `${c}: bf16 fc8 relative error ${err}`);
      assert.ok(err > 0, `${c}: bf16 gave float32's exact answer, so it did not run in bf16`);
      const dense = await model.run(input256(), { outputs: ['fc8'], head: 'dense' });
      assert.ok(relError(dense.fc8.data, expected['256x320.dense.fc8'].data) <= 3e-2, `${c}: bf16 dense fc8`);
      await model.dispose();
    }
    await new Promise((resolve) => setImmediate(resolve));  // warnings are emitted on the next tick
    process.off('warning', onWarning);
    // Where the CPU lacks bf16 arithmetic the user is told once per process that it is emulated.
    const hardware = /bf16|amx/.test(native().versions().isa ?? '');
    assert.ok(warnings.length <= 1, warnings.join('\n'));
    if (hardware) assert.equal(warnings.length, 0);
    else if (warnings.length) assert.match(warnings[0], /no bf16 arithmetic .* slower than fp32/);
  });

  describe('int8', () => {
    const calibrations = new Map<string, Calibration>();
    before(async () => {
      // Calibrated on random inputs other than the ones checked below.
      for (const c of CASES) calibrations.set(c, await calibrate(weightsOf(c), randomInput(4, 224, 224, 99), { threads: 2 }));
    });

    it('keeps fc7 at cosine similarity >= 0.99 with fp32 on the random inputs, every config and head', async () => {
      for (const c of CASES) {
        const expected = readTensors(fixture(`${c}.io.safetensors`));
        const model = await loadModel(weightsOf(c), { precision: 'int8', calibration: calibrations.get(c)!, threads: 2 });
        const fixed = await model.run(input224(), { outputs: ['fc7', 'fc8'] });
        const sim = cosine(fixed.fc7.data, expected['224.fc7'].data);
        assert.ok(sim >= 0.99, `${c}: int8 fc7 cosine ${sim}`);
        assert.ok(sim < 1 - 1e-7, `${c}: int8 matched fp32 exactly, so it did not quantize`);
        const dense = await model.run(input256(), { outputs: ['fc8'], head: 'dense' });
        assert.ok(cosine(dense.fc8.data, expected['256x320.dense.fc8'].data) >= 0.99, `${c}: int8 dense fc8`);
        const adaptive = await model.run(input256(), { outputs: ['fc8'] });
        assert.ok(cosine(adaptive.fc8.data, expected['256x320.torchvision.fc8'].data) >= 0.99, `${c}: int8 fc8 at 256x320`);
        await model.dispose();
      }
    });

    it('keeps fc7 at cosine similarity >= 0.99 on the real photo', async () => {
      const photo = readTensors(fixture('images/coffee-D.io.safetensors'));
      const model = await loadModel(weightsOf('D'), { precision: 'int8', calibration: calibrations.get('D')!, threads: 2 });
      const out = await model.run(photo.input, { outputs: ['fc7'] });
      const sim = cosine(out.fc7.data, photo.fc7.data);
      assert.ok(sim >= 0.99, `int8 fc7 cosine on coffee.png ${sim}`);
      await model.dispose();
    });

    it('calibrates from image files as from tensors, and round-trips the file', async () => {
      const dir = tmpDir();
      const images = [fixture('images/coffee.png'), path.resolve(__dirname, '../../samples', fs.readdirSync(path.resolve(__dirname, '../../samples'))[0])];
      let progress = 0;
      const cal = await calibrate(weightsOf('D'), images, { threads: 2, onProgress: (n) => { progress = n; } });
      assert.equal(cal.images, 2);
      assert.equal(progress, 2);
      assert.deepEqual(Object.keys(cal.max), ['conv1_1', 'conv1_2', 'conv2_1', 'conv2_2', 'conv3_1', 'conv3_2', 'conv3_3', 'conv4_1', 'conv4_2', 'conv4_3', 'conv5_1', 'conv5_2', 'conv5_3', 'fc6', 'fc7']);
      const file = path.join(dir, 'D.calib.json');
      writeCalibration(file, cal);
      const model = await loadModel(weightsOf('D'), { precision: 'int8', calibration: file, threads: 2 });
      assert.deepEqual(model.calibration, cal);
      await model.dispose();
      // A-LRN quantizes after the LRN too: its range is calibrated.
      const lrn = await calibrate(weightsOf('A-LRN'), input224());
      const fp32 = await loadModel(weightsOf('A-LRN'));
      const norm1 = (await fp32.run(input224(), { outputs: ['norm1'] })).norm1.data;
      assert.equal(lrn.max.norm1, norm1.reduce((a, b) => Math.max(a, b), 0));
      await fp32.dispose();
    });

    it('without a calibration, says how to make one', async () => {
      await rejects(loadModel(weightsOf('D'), { precision: 'int8' }), 'E_ARG', /vgg calibrate --weights .*D\.weights\.safetensors --input/);
      await rejects(loadModel(weightsOf('D'), { calibration: calibrations.get('D')! }), 'E_ARG', /calibration is for int8, not fp32/);
      await rejects(loadModel(weightsOf('D'), { precision: 'bf16', winograd: true }), 'E_ARG', /winograd is for fp32 on the CPU/);
      await rejects(loadModel(weightsOf('D'), { winograd: 'yes' as unknown as boolean }), 'E_ARG', /options\.winograd/);
      await rejects(loadModel(weightsOf('D'), { precision: 'fp16' }), 'E_ARG', /one of fp32, bf16, int8 on the CPU/);
    });

    it('rejects calibrations that are broken or made for another network', async () => {
      const dir = tmpDir();
      const d = calibrations.get('D')!;
      const load = (calibration: unknown) => loadModel(weightsOf('D'), { precision: 'int8', calibration: calibration as Calibration });
      await rejects(load(path.join(dir, 'missing.json')), 'E_IO', /cannot read calibration file/);
      fs.writeFileSync(path.join(dir, 'bad.json'), '{"format": "vggnet-calib');
      await rejects(load(path.join(dir, 'bad.json')), 'E_ARG', /bad\.json is not JSON/);
      await rejects(load({ hello: 1 }), 'E_ARG', /not a vggnet calibration/);
      await rejects(load(calibrations.get('E')!), 'E_ARG', /made for a VGG with cfg/);
      await rejects(load({ ...d, max: { ...d.max, conv3_2: -1 } }), 'E_ARG', /positive range for conv3_2 but received -1/);
      await rejects(load({ ...d, max: { ...d.max, fc7: undefined } }), 'E_ARG', /positive range for fc7/);
      await rejects(load(42), 'E_ARG', /options\.calibration/);
      assert.throws(() => loadCalibration({ ...d, max: { ...d.max, fc6: Number.NaN } }, { arch: 'D', batchNorm: false, cfg: d.cfg, fcHidden: 256, classes: 10 }), /fc6/);
    });

    it('fails cleanly on bad calibration input', async () => {
      const wrong: Tensor = { data: new Float32Array(2 * 4 * 32 * 32), shape: [2, 4, 32, 32] };
      await rejects(calibrate(weightsOf('D'), wrong), 'E_SHAPE', /channels/);
      await rejects(calibrate(weightsOf('D'), { data: new Float32Array(3), shape: [3] }), 'E_SHAPE', /\[n, 3, h, w\]/);
      await rejects(calibrate(weightsOf('D'), randomInput(1, 16, 16)), 'E_SHAPE', /too small/);
      await rejects(calibrate(weightsOf('D'), []), 'E_ARG', /saw no images/);
      const dir = tmpDir();
      fs.writeFileSync(path.join(dir, 'broken.jpg'), 'not a jpeg');
      await rejects(calibrate(weightsOf('D'), [path.join(dir, 'broken.jpg')]), 'E_IMAGE', /broken\.jpg/);
      await rejects(calibrate(weightsOf('D'), randomInput(1, 32, 32), { batchSize: 0 }), 'E_ARG', /options\.batchSize/);
      await rejects(calibrate(path.join(dir, 'none.safetensors'), randomInput(1, 32, 32)), 'E_IO', /none\.safetensors/);
    });
  });
});

// fc layers past 64 MB are converted a slice of output channels at a time (to bound peak memory);
// the fixtures' fc layers are far smaller, so this network is made here: 4096-wide fc layers
// (fc7 is 67 MB) behind a small feature extractor, checked against fc7 computed in JavaScript.
describe('large fc layers', function () {
  this.timeout(120000);
  let file: string;
  let W7: Float32Array, b7: Float32Array;
  const hidden = 4096;
  before(() => {
    const arch = { arch: 'custom', batchNorm: false, cfg: [8, 'M', 8, 'M', 8, 'M', 8, 'M', 8, 'M'] as CfgItem[], fcHidden: hidden, classes: 10 };
    const rand = prng(5);
    const t = (shape: number[], scale: number): Tensor => {
      const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
      for (let i = 0; i < data.length; i++) data[i] = (rand() * 2 - 1) * scale;
      return { data, shape };
    };
    const tensors: Record<string, Tensor> = {};
    for (const l of featureLayers(arch)) {
      if (l.kind !== 'conv') continue;
      tensors[`features.${l.feature}.weight`] = t([l.outC, l.inC, 3, 3], 0.5);
      tensors[`features.${l.feature}.bias`] = t([l.outC], 0.1);
    }
    const fc = [[hidden, 8 * 49], [hidden, hidden], [10, hidden]];
    fc.forEach(([o, i], k) => {
      tensors[`classifier.${3 * k}.weight`] = t([o, i], 1 / Math.sqrt(i));
      tensors[`classifier.${3 * k}.bias`] = t([o], 0.1);
    });
    W7 = tensors['classifier.3.weight'].data;
    b7 = tensors['classifier.3.bias'].data;
    file = path.join(tmpDir(), 'wide-fc.safetensors');
    writeSafetensors(file, tensors, archMetadata(arch, 'torchvision'));
  });

  const fc7Of = (fc6: Float32Array, n: number) => {
    const out = new Float32Array(n * hidden);
    for (let s = 0; s < n; s++) {
      for (let o = 0; o < hidden; o++) {
        let acc = b7[o];
        for (let i = 0; i < hidden; i++) acc += W7[o * hidden + i] * fc6[s * hidden + i];
        out[s * hidden + o] = Math.max(acc, 0);
      }
    }
    return out;
  };

  for (const [precision, tolerance] of [['fp32', 1e-4], ['bf16', 3e-2]] as const) {
    it(`${precision}: fc7 is right, batch 8 or batch 1 first`, async () => {
      for (const order of [[8, 1], [1, 8]]) {
        const model = await loadModel(file, { precision, threads: 2 });
        for (const n of order) {
          const out = await model.run(randomInput(n, 224, 224, n), { outputs: ['fc6', 'fc7'] });
          const err = relError(out.fc7.data, fc7Of(out.fc6.data, n));
          assert.ok(err <= tolerance, `${precision}, batches ${order}, batch ${n}: fc7 relative error ${err}`);
        }
        await model.dispose();
      }
    });
  }

  it('int8: fc7 stays at cosine >= 0.99 of its float32 value', async () => {
    const calibration = await calibrate(file, randomInput(2, 224, 224, 3), { threads: 2 });
    const fp32 = await loadModel(file, { threads: 2 });
    const int8 = await loadModel(file, { precision: 'int8', calibration, threads: 2 });
    for (const n of [8, 1]) {
      const x = randomInput(n, 224, 224, 40 + n);
      const [a, b] = [await fp32.run(x, { outputs: ['fc7'] }), await int8.run(x, { outputs: ['fc7'] })];
      assert.ok(cosine(b.fc7.data, a.fc7.data) >= 0.99, `batch ${n}: cosine ${cosine(b.fc7.data, a.fc7.data)}`);
    }
    await fp32.dispose();
    await int8.dispose();
  });
});
