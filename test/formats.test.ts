import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadModel, packWeights } from '../lib';
import { openWeights } from '../lib/weights/open';
import { VggError } from '../lib/errors';
import { readContainer } from '../lib/weights/containers';
import { readSafetensorsFile } from '../lib/weights/safetensors';
import { fixture, prng, readTensors, relError, repack, tmpDir, writeTemp } from './helpers';

/** Made by test/fixtures/formats/make_formats.py from the seeded fixture weights. */
const FORMATS = path.resolve(__dirname, '../../test/fixtures/formats');
const format = (name: string) => path.join(FORMATS, name);
const main = path.resolve(__dirname, '../lib/cli/main.js');
const x224 = readTensors(fixture('input-224.safetensors')).input;

/** Each container file, the fixture whose weights it holds, and what loading it must say. */
const CASES = [
  { file: 'A-LRN.v1.caffemodel', weights: 'A-LRN', container: 'Caffe V1 caffemodel', preset: 'caffe', arch: 'A-LRN' },
  { file: 'A-bn.v2.caffemodel', weights: 'A-bn', container: 'Caffe V2 caffemodel', preset: 'caffe', arch: 'A' },
  { file: 'D.keras2.h5', weights: 'D', container: 'Keras HDF5', preset: 'caffe', arch: 'D' },
  { file: 'C.zoo.onnx', weights: 'C', container: 'ONNX model', preset: 'torchvision', arch: 'C' },
  { file: 'B.pytorch.onnx', weights: 'B', container: 'ONNX model', preset: 'torchvision', arch: 'B' },
];

describe('weights in other containers: Caffe, Keras, ONNX', () => {
  for (const c of CASES) {
    describe(c.file, () => {
      it('converts to the very tensors of the same weights in safetensors, bit for bit', async () => {
        const converted = await readContainer(format(c.file), new Uint8Array(fs.readFileSync(format(c.file))));
        assert.ok(converted);
        const expected = readTensors(fixture(`${c.weights}.weights.safetensors`));
        const names = Object.keys(expected).filter((n) => !n.endsWith('num_batches_tracked'));
        assert.deepEqual([...converted.tensors.keys()].sort(), names.sort());
        for (const n of names) {
          const t = converted!.tensors.get(n)! as { data: Float32Array; shape: number[] };
          assert.deepEqual(t.shape, expected[n].shape, n);
          assert.ok(Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength).equals(
            Buffer.from(expected[n].data.buffer, expected[n].data.byteOffset, expected[n].data.byteLength)), `${n} differs`);
        }
      });

      it('every blob matches the PyTorch float64 reference of those weights', async () => {
        const model = await loadModel(format(c.file), { threads: 2 });
        try {
          assert.equal(model.info.arch, c.arch);
          assert.equal(model.info.preset, c.preset);
          assert.equal(model.info.container, c.container);
          const io = readTensors(fixture(`${c.weights}.io.safetensors`));
          const blobs = Object.keys(io).filter((k) => k.startsWith('224.')).map((k) => k.slice(4));
          assert.ok(blobs.length >= 5);
          const out = await model.run(x224, { outputs: blobs });
          for (const b of blobs) {
            const err = relError(out[b].data, io[`224.${b}`].data);
            assert.ok(err <= 1e-4, `${b}: relative error ${err}`);
          }
        } finally {
          await model.dispose();
        }
      });
    });
  }

  it('reads a Keras file off the event loop: other callbacks run while it converts', async () => {
    const file = format('D.keras2.h5');
    const bytes = new Uint8Array(fs.readFileSync(file));
    await readContainer(file, bytes); // the reader is loaded and warm
    let turns = 0;
    const ticking = setInterval(() => turns++, 0);
    try {
      const converted = await readContainer(file, bytes);
      assert.ok(converted?.tensors.size, 'converted');
    } finally {
      clearInterval(ticking);
    }
    // Read on this thread, the whole conversion would be one synchronous stretch after the warm reader.
    assert.ok(turns > 0, `${turns} timer turns while the file converted`);
  });

  it('a network that is not a VGG is E_WEIGHTS_FORMAT naming what was found', async () => {
    await assert.rejects(openWeights(format('not-vgg.resnet.caffemodel')),
      (e: VggError) => e.code === 'E_WEIGHTS_FORMAT' && /res2a \(Eltwise\) reads \[conv1, res2a_branch2a\]/.test(e.message));
    await assert.rejects(openWeights(format('not-vgg.residual.onnx')),
      (e: VggError) => e.code === 'E_WEIGHTS_FORMAT' && /node skip \(Add\) reads the activations \[c1, c0\]/.test(e.message));
  });

  it('vgg convert writes torchvision safetensors that keep the preset; vgg info names the container', () => {
    const dir = tmpDir();
    for (const c of CASES) {
      const out = path.join(dir, `${c.file}.safetensors`);
      const r = spawnSync(process.execPath, [main, 'convert', format(c.file), out], { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      const st = readSafetensorsFile(out);
      assert.equal(st.metadata['vgg.preset'], c.preset);
      assert.equal(st.metadata['vgg.container'], c.container);
      assert.equal(st.metadata['vgg.naming'], 'torchvision');
      const info = spawnSync(process.execPath, [main, 'info', '--weights', format(c.file)], { encoding: 'utf8' });
      assert.equal(info.status, 0, info.stderr);
      assert.match(info.stdout, new RegExp(`weights +\\S+ \\(${c.container}, torchvision names\\)`));
      assert.match(info.stdout, new RegExp(`preset +${c.preset} preprocessing`));
    }
  });
});

describe('damaged containers: random byte flips end in a VggError or a valid model', function () {
  this.timeout(120_000);
  const TRIALS = 500;
  for (const name of ['tiny.v1.caffemodel', 'tiny.zoo.onnx', 'tiny.keras2.h5']) {
    it(`${name}: ${TRIALS} damaged copies`, async () => {
      const original = fs.readFileSync(format(name));
      const rand = prng(15);
      const outcomes = { loaded: 0, refused: 0 };
      for (let trial = 0; trial < TRIALS; trial++) {
        const bytes = Buffer.from(original);
        // 1 to 4 bytes, at a random place, mostly in the structure: the first kilobytes and anywhere.
        const flips = 1 + Math.floor(rand() * 4);
        for (let i = 0; i < flips; i++) {
          const at = Math.floor(rand() * (rand() < 0.5 ? Math.min(bytes.length, 4096) : bytes.length));
          bytes[at] ^= 1 + Math.floor(rand() * 255);
        }
        const file = writeTemp(bytes, name);
        try {
          const w = await openWeights(file);
          assert.ok(w.convs.length > 0);
          outcomes.loaded++;
        } catch (e) {
          if (!(e instanceof VggError)) throw new Error(`trial ${trial}: ${(e as Error).stack}`);
          outcomes.refused++;
        }
        assert.ok(process.memoryUsage().rss < 2 ** 31, `trial ${trial}: RSS ${process.memoryUsage().rss}`);
      }
      assert.ok(outcomes.refused > TRIALS / 10, `only ${outcomes.refused} of ${TRIALS} damaged copies refused`);
    });
  }
});

describe('the weights say their preprocessing', () => {
  const image = fixture(`images/${fs.readdirSync(fixture('images')).find((f) => /\.(png|jpe?g)$/i.test(f))}`);

  it('extract and classify use the weights\' preset unless told otherwise', async () => {
    const model = await loadModel(format('tiny.v1.caffemodel'), { threads: 1 });
    try {
      assert.equal(model.info.preset, 'caffe');
      const fc7 = async (preset?: 'caffe' | 'torchvision') => {
        for await (const r of model.extract([image], { outputs: ['fc7'], onError: 'throw', ...(preset ? { preprocess: { preset } } : {}) })) return r.outputs!.fc7.data;
        throw new Error('no record');
      };
      const [own, caffe, torchvision] = [await fc7(), await fc7('caffe'), await fc7('torchvision')];
      assert.deepEqual(own, caffe);
      assert.ok(relError(torchvision, caffe) > 1e-3, 'the presets give different inputs');
      assert.deepEqual(await model.classify(image), await model.classify(image, { preset: 'caffe' }));
    } finally {
      await model.dispose();
    }
  });

  it('a packed file keeps the preset of the weights it was packed from', async () => {
    const out = path.join(tmpDir(), 'tiny.packed');
    await packWeights(format('tiny.v1.caffemodel'), out, { shapes: [[1, 32, 32, 'fixed']], threads: 1 });
    const model = await loadModel(out, { threads: 1 });
    try {
      assert.equal(model.info.preset, 'caffe');
      assert.equal(model.info.container, 'packed');
    } finally {
      await model.dispose();
    }
  });
});

describe('weights without a classifier: a feature extractor up to pool5', () => {
  const io = readTensors(fixture('E.io.safetensors'));
  const features = Object.keys(io).filter((k) => k.startsWith('224.') && !/^224\.(fc|prob)/.test(k)).map((k) => k.slice(4));
  // The same weights twice: a Keras 1 notop file, and torchvision's state dict without `classifier.*`.
  const noClassifier = () => writeTemp(repack(fixture('E.weights.safetensors'), (tensors, meta) => {
    for (const name of tensors.keys()) if (name.startsWith('classifier.')) tensors.delete(name);
    delete meta.metadata;
  }), 'E-features.safetensors');

  for (const [what, file] of [['Keras 1 notop', () => format('E.keras1-notop.h5')], ['torchvision features only', noClassifier]] as const) {
    it(`${what}: info.classes 0, every feature blob matches PyTorch, the classifier's blobs are E_ARG`, async () => {
      const model = await loadModel(file(), { threads: 2 });
      try {
        assert.equal(model.info.classes, 0);
        assert.equal(model.info.arch, 'E');
        assert.deepEqual(model.blobNames().slice(-1), ['pool5']);
        const out = await model.run(x224, { outputs: features });
        for (const b of features) assert.ok(relError(out[b].data, io[`224.${b}`].data) <= 1e-4, b);
        assert.deepEqual((await model.run(x224)).pool5.shape, io['224.pool5'].shape);
        for (const blob of ['fc6', 'fc8', 'prob']) {
          await assert.rejects(model.run(x224, { outputs: [blob] }), (e: VggError) => e.code === 'E_ARG' && /no classifier/.test(e.message));
        }
        await assert.rejects(model.run(x224, { outputs: ['pool5'], head: 'dense' }), (e: VggError) => e.code === 'E_ARG' && /dense head: the weights have no classifier/.test(e.message));
        await assert.rejects(model.classify(fixture('images/coffee.png')), (e: VggError) => e.code === 'E_ARG' && /no classifier/.test(e.message));
      } finally {
        await model.dispose();
      }
    });
  }

  it('vgg convert keeps a notop file a feature extractor', async () => {
    const out = path.join(tmpDir(), 'E-notop.safetensors');
    const r = spawnSync(process.execPath, [main, 'convert', format('E.keras1-notop.h5'), out], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(readSafetensorsFile(out).metadata['vgg.classes'], '0');
    const w = await openWeights(out);
    assert.equal(w.arch.classes, 0);
    assert.equal(w.preset, 'caffe');
  });
});
