import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadModel, type Model } from '../lib';
import { writeSafetensors } from '../lib/weights/safetensors';
import { FIXTURES, readTensors, relError, repack, tmpDir, writeTemp } from './helpers';

/** The project's fp32 bar (README's precisions table): max abs error over max abs value against PyTorch float64. */
const TOLERANCE = 1e-4;

interface Case { arch: string; batch_norm: boolean; weights: string; expected: string; params: number }
const manifest = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'manifest.json'), 'utf8')) as { cases: Record<string, Case> };
const x224 = readTensors(path.join(FIXTURES, 'input-224.safetensors')).input;
const x256 = readTensors(path.join(FIXTURES, 'input-256x320.safetensors')).input;

function assertClose(actual: { data: Float32Array; shape: number[] }, expected: { data: Float32Array; shape: number[] }, what: string) {
  assert.deepEqual(actual.shape, expected.shape, `${what}: shape`);
  const err = relError(actual.data, expected.data);
  assert.ok(err <= TOLERANCE, `${what}: relative error ${err.toExponential(2)} > ${TOLERANCE}`);
}

describe('fixtures: every case against PyTorch float64', () => {
  for (const [name, c] of Object.entries(manifest.cases)) {
    describe(name, () => {
      let model: Model;
      const io = readTensors(path.join(FIXTURES, c.expected));
      before(async () => { model = await loadModel(path.join(FIXTURES, c.weights), { threads: 2 }); });
      after(() => model.dispose());

      it('reads the architecture and counts its parameters', () => {
        assert.equal(model.info.arch, c.arch);
        assert.equal(model.info.batchNorm, c.batch_norm);
        assert.equal(model.info.params, c.params);
      });

      it('fixed head at 224x224: every blob in the fixture', async () => {
        const blobs = Object.keys(io).filter((k) => k.startsWith('224.')).map((k) => k.slice(4));
        assert.ok(blobs.length >= 5);
        const out = await model.run(x224, { outputs: blobs });
        for (const b of blobs) assertClose(out[b], io[`224.${b}`], b);
      });

      it('fixed head at 256x320 pools pool5 adaptively to 7x7', async () => {
        const out = await model.run(x256, { outputs: ['pool5', 'fc8'] });
        assert.deepEqual(out.pool5.shape.slice(2), [8, 10]);
        assertClose(out.fc8, io['256x320.torchvision.fc8'], 'fc8');
      });

      it('dense head at 224x224: a 1x1 score map, the same scores as the fixed head', async () => {
        const out = await model.run(x224, { outputs: ['fc8_map', 'fc8', 'prob'], head: 'dense' });
        assert.deepEqual(out.fc8_map.shape.slice(2), [1, 1]);
        assertClose(out.fc8, io['224.fc8'], 'fc8');
        assertClose(out.prob, io['224.prob'], 'prob');
      });

      it('dense head at 256x320: score map, averaged scores, posteriors, flip', async () => {
        const out = await model.run(x256, { outputs: ['fc8_map', 'fc8', 'prob'], head: 'dense' });
        assertClose(out.fc8_map, io['256x320.dense.scoremap'], 'fc8_map');
        assertClose(out.fc8, io['256x320.dense.fc8'], 'fc8');
        assertClose(out.prob, io['256x320.dense.prob'], 'prob');
        const flipped = await model.run(x256, { outputs: ['prob', 'fc8'], head: 'dense', flip: true });
        assertClose(flipped.prob, io['256x320.dense.flip.prob'], 'flip prob');
        assert.ok(relError(flipped.prob.data, io['256x320.dense.prob'].data) > 10 * TOLERANCE, 'flip changes the posteriors');
        assertClose(flipped.fc8, io['256x320.dense.fc8'], 'fc8 of the unflipped image under flip');
      });
    });
  }
});

describe('fixtures: other weight formats', () => {
  const io = readTensors(path.join(FIXTURES, 'D.io.safetensors'));

  it('timm names (pre_logits.fc1 as a 7x7 conv, fc2 as 1x1, head.fc) give the same network', async () => {
    const model = await loadModel(path.join(FIXTURES, 'D-timm.weights.safetensors'), { threads: 2 });
    try {
      assert.equal(model.info.naming, 'timm');
      assert.equal(model.info.arch, 'D');
      const out = await model.run(x224, { outputs: ['fc7', 'prob'] });
      assertClose(out.fc7, io['224.fc7'], 'fc7');
      assertClose(out.prob, io['224.prob'], 'prob');
      const dense = await model.run(x256, { outputs: ['fc8_map'], head: 'dense' });
      assertClose(dense.fc8_map, io['256x320.dense.scoremap'], 'fc8_map');
    } finally {
      await model.dispose();
    }
  });

  it('the real-image fixture: D on coffee.png preprocessed by torchvision', async () => {
    const coffee = readTensors(path.join(FIXTURES, 'images', 'coffee-D.io.safetensors'));
    const model = await loadModel(path.join(FIXTURES, 'D.weights.safetensors'), { threads: 2 });
    try {
      const out = await model.run(coffee.input, { outputs: ['pool5', 'fc7', 'fc8', 'prob'] });
      for (const b of ['pool5', 'fc7', 'fc8', 'prob']) assertClose(out[b], coffee[b], b);
    } finally {
      await model.dispose();
    }
  });

  it('a file without __metadata__: architecture and batch norm inferred from the tensors', async () => {
    for (const name of ['A-LRN', 'C', 'E-bn']) {
      const src = readTensors(path.join(FIXTURES, `${name}.weights.safetensors`));
      const file = path.join(tmpDir(), `${name}.safetensors`);
      writeSafetensors(file, src);
      const model = await loadModel(file, { threads: 2 });
      try {
        assert.equal(model.info.arch, manifest.cases[name].arch, name);
        assert.equal(model.info.batchNorm, manifest.cases[name].batch_norm, name);
        assert.deepEqual(model.info.cfg, (manifest.cases[name] as unknown as { cfg: unknown }).cfg, name);
        const out = await model.run(x224, { outputs: ['fc8'] });
        assertClose(out.fc8, readTensors(path.join(FIXTURES, `${name}.io.safetensors`))['224.fc8'], `${name} fc8`);
      } finally {
        await model.dispose();
      }
    }
  });

  it('F16 and BF16 weights are widened to float32 at load', async () => {
    // Rounding the weights to 16 bits moves fc8 by about 2^-11 (F16) and 2^-8 (BF16) relative.
    for (const [dtype, tolerance] of [['F16', 5e-3], ['BF16', 3e-2]] as const) {
      const file = writeTemp(repack(path.join(FIXTURES, 'D.weights.safetensors'), (tensors) => {
        for (const t of tensors.values()) {
          const f32 = new Float32Array(t.data.buffer.slice(t.data.byteOffset, t.data.byteOffset + t.data.length));
          const bits = new Uint16Array(f32.length);
          const words = new Uint32Array(f32.buffer);
          for (let i = 0; i < f32.length; i++) bits[i] = dtype === 'BF16' ? (words[i] + 0x8000) >>> 16 : toHalf(f32[i]);
          t.dtype = dtype;
          t.data = new Uint8Array(bits.buffer);
        }
      }), `D-${dtype}.safetensors`);
      const model = await loadModel(file, { threads: 2 });
      try {
        const out = await model.run(x224, { outputs: ['fc8'] });
        const err = relError(out.fc8.data, io['224.fc8'].data);
        assert.ok(err < tolerance && err > 0, `${dtype}: fc8 relative error ${err}`);
      } finally {
        await model.dispose();
      }
    }
  });
});

/** float32 to IEEE half, round to nearest (normal range only: the fixture weights are small). */
function toHalf(v: number): number {
  const f = new Float32Array([v]);
  const x = new Uint32Array(f.buffer)[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = ((x >>> 23) & 0xff) - 127 + 15;
  if (exp <= 0) return sign;
  return sign | ((exp << 10) + Math.round((x & 0x7fffff) / 8192)); // a rounding carry moves into the exponent
}
