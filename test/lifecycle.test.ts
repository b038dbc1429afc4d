// The executor's life: inference off the event loop, a queue that keeps every caller's answer
// its own, shape caching, no leaks across load/dispose, and clean ends (dispose, exit, workers).
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { VggError } from '../lib/errors';
import { loadModel, type Model } from '../lib/model';
import type { Outputs } from '../lib/engine';
import type { Tensor } from '../lib/tensor';
import { fixture, randomInput, readTensors, relError, tmpDir, withTicker } from './helpers';

const D = fixture('D.weights.safetensors');
const io = readTensors(fixture('D.io.safetensors'));
const x224 = readTensors(fixture('input-224.safetensors')).input;
const x256 = readTensors(fixture('input-256x320.safetensors')).input;

/** Image i of a batch, as a view (so the native side must honour byteOffset). */
function image(t: Tensor, i: number): Tensor {
  const per = t.data.length / t.shape[0];
  return { data: t.data.subarray(i * per, (i + 1) * per), shape: [1, ...t.shape.slice(1)] };
}
const bytes = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
const sameBits = (a: Outputs, b: Outputs) => Object.keys(a).every((k) => bytes(a[k].data).equals(bytes(b[k].data)));
const threadCount = () => fs.readdirSync('/proc/self/task').length;
const gc = async () => {
  const collect = (global as { gc?: () => void }).gc;
  for (let i = 0; i < 3; i++) {
    collect?.();
    await new Promise((r) => setTimeout(r, 20)); // N-API finalizers run on a later tick
  }
};

/** Runs `code` in a fresh node process (a crash there must not take mocha with it). */
function child(code: string, timeout = 30_000) {
  const lib = JSON.stringify(path.resolve(__dirname, '../lib/model'));
  const helpers = JSON.stringify(path.resolve(__dirname, 'helpers'));
  const prelude = `const { loadModel } = require(${lib}); const { fixture, randomInput } = require(${helpers});\n`;
  const r = spawnSync(process.execPath, ['-e', prelude + code], { encoding: 'utf8', timeout });
  return { ...r, report: `status ${r.status}, signal ${r.signal}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}` };
}

describe('lifecycle', function () {
  this.timeout(60_000);

  describe('one D model (threads 2)', function () {
    let model: Model;
    before(async () => { model = await loadModel(D, { threads: 2 }); });
    after(async () => { await model?.dispose(); });

    it('the fixed head at 256x320 (adaptive pooling) matches torchvision to 1e-4', async () => {
      const out = await model.run(x256, { outputs: ['fc8'] });
      assert.deepEqual(out.fc8.shape, [2, 10]);
      const err = relError(out.fc8.data, io['256x320.torchvision.fc8'].data);
      assert.ok(err < 1e-4, `relative error ${err}`);
    });

    it('a second input shape works, and the first still works after it (shape cache)', async () => {
      const a = await model.run(x224, { outputs: ['pool5', 'fc8'] });
      assert.ok(relError(a.fc8.data, io['224.fc8'].data) < 1e-4, '224 fc8');
      const b = await model.run(x256, { outputs: ['fc8'] });
      assert.ok(relError(b.fc8.data, io['256x320.torchvision.fc8'].data) < 1e-4, '256x320 fixed fc8');
      const dense = await model.run(x256, { outputs: ['fc8_map', 'fc8'], head: 'dense' });
      assert.ok(relError(dense.fc8_map.data, io['256x320.dense.scoremap'].data) < 1e-4, '256x320 dense score map');
      assert.ok(relError(dense.fc8.data, io['256x320.dense.fc8'].data) < 1e-4, '256x320 dense fc8');
      const small = await model.run(randomInput(3, 48, 80), { outputs: ['pool5'] });
      assert.deepEqual(small.pool5.shape, [3, 32, 1, 2]);
      const again = await model.run(x224, { outputs: ['pool5', 'fc8'] });
      assert.ok(sameBits(a, again), 'the 224 results changed after other shapes ran');
      const b2 = await model.run(x256, { outputs: ['fc8'] });
      assert.ok(sameBits(b, b2), 'the 256x320 results changed after other shapes ran');
    });

    it('past VGGNET_SHAPE_CACHE shapes the least recently used is dropped and recompiled on demand', async () => {
      process.env.VGGNET_SHAPE_CACHE = '2';
      const small = await loadModel(fixture('D.weights.safetensors'), { threads: 1 });
      delete process.env.VGGNET_SHAPE_CACHE;
      try {
        const shapes = [[32, 32], [64, 48], [48, 96]];
        const first = await Promise.all(shapes.map(([h, w]) => small.run(randomInput(1, h, w), { outputs: ['fc8'] })));
        for (let round = 0; round < 2; round++) {
          for (const [i, [h, w]] of shapes.entries()) {
            const again = await small.run(randomInput(1, h, w), { outputs: ['fc8'] });
            assert.ok(sameBits(first[i], again), `${h}x${w} changed after eviction`);
          }
        }
      } finally {
        await small.dispose();
      }
    });

    it('results do not depend on batch composition: each image alone equals itself in the batch', async () => {
      const outputs = ['conv1_1', 'pool5', 'fc7', 'prob'];
      const batch = await model.run(x224, { outputs });
      for (const i of [0, 1]) {
        const alone = await model.run(image(x224, i), { outputs });
        for (const name of outputs) {
          const per = batch[name].data.length / 2;
          const err = relError(alone[name].data, batch[name].data.subarray(i * per, (i + 1) * per));
          assert.ok(err < 1e-5, `image ${i} ${name}: relative error ${err}`);
        }
      }
    });

    it('6 concurrent runs queue, and each gets its own answer, bit for bit', async () => {
      const sizes = [64, 96, 64, 128, 96, 64];
      const inputs = sizes.map((s, i) => randomInput(2, s, s, 100 + i));
      const outputs = ['conv1_1', 'pool5', 'fc7', 'prob'];
      assert.equal(model.pending, 0);
      const running = inputs.map((x) => model.run(x, { outputs }));
      assert.equal(model.pending, 6);
      const together = await Promise.all(running);
      assert.equal(model.pending, 0);
      for (const [i, x] of inputs.entries()) {
        const alone = await model.run(x, { outputs });
        assert.ok(sameBits(together[i], alone), `run ${i} differs from its sequential run`);
      }
      assert.ok(!bytes(together[0].prob.data).equals(bytes(together[2].prob.data)), 'different inputs gave the same prob');
    });
  });

  it('two models running at the same time do not disturb each other', async () => {
    const [a, d] = await Promise.all([loadModel(fixture('A.weights.safetensors'), { threads: 1 }), loadModel(D, { threads: 1 })]);
    try {
      const outputs = ['pool5', 'fc8'];
      const xs = [0, 1, 2].map((i) => randomInput(2, 96, 96, 200 + i));
      const alone: [Outputs, Outputs][] = [];
      for (const x of xs) alone.push([await a.run(x, { outputs }), await d.run(x, { outputs })]);
      const together = await Promise.all(xs.map((x) => Promise.all([a.run(x, { outputs }), d.run(x, { outputs })])));
      together.forEach(([ra, rd], i) => {
        assert.ok(sameBits(ra, alone[i][0]), `model A, input ${i}`);
        assert.ok(sameBits(rd, alone[i][1]), `model D, input ${i}`);
      });
    } finally {
      await Promise.all([a.dispose(), d.dispose()]);
    }
  });

  it('the event loop stays free during a run of at least 300 ms', async () => {
    const model = await loadModel(D, { threads: 1 });
    try {
      // Start at the suggested 8x448x448 and grow until one run really takes 300 ms here.
      let measured = 0;
      for (const size of [448, 640, 896, 1280]) {
        const x = randomInput(8, size, size);
        const { result: out, ms, maxLag, ticks } = await withTicker(() => model.run(x, { outputs: ['prob'] }));
        measured = ms;
        assert.equal(out.prob.data.length, 80);
        // A run on the event loop would hold it for the whole run; under half of it (or 50 ms),
        // the loop was free, whatever else shares the cores (a busy CI host lags 50 ms at times).
        assert.ok(maxLag < Math.max(50, measured / 2), `max event-loop lag ${maxLag.toFixed(1)} ms during a ${measured.toFixed(0)} ms run at ${size}x${size}`);
        assert.ok(ticks >= measured / 10 / 3, `only ${ticks} timer ticks in ${measured.toFixed(0)} ms`);
        if (measured >= 300) {
          console.log(`      8x${size}x${size}: ${measured.toFixed(0)} ms, max lag ${maxLag.toFixed(1)} ms`);
          break;
        }
      }
      assert.ok(measured >= 300, `the longest run took ${measured.toFixed(0)} ms, too short to show the event loop is free`);
    } finally {
      await model.dispose();
    }
  });

  it('loading, running and disposing 50 times grows RSS by < 50 MB and leaks no threads', async () => {
    const x = randomInput(1, 64, 64);
    const cycle = async () => {
      const model = await loadModel(D, { threads: 2 });
      const out = await model.run(x, { outputs: ['prob'] });
      assert.equal(out.prob.data.length, 10);
      await model.dispose();
    };
    for (let i = 0; i < 3; i++) await cycle();
    await gc();
    const rss0 = process.memoryUsage().rss;
    const threads0 = threadCount();
    for (let i = 0; i < 50; i++) await cycle();
    await gc();
    const grown = (process.memoryUsage().rss - rss0) / 2 ** 20;
    assert.ok(grown < 50, `RSS grew by ${grown.toFixed(1)} MB`);
    assert.ok(threadCount() <= threads0, `threads went from ${threads0} to ${threadCount()}`);
  });

  it('dispose while runs are queued: the runs finish with their answers, later runs are E_DISPOSED', async () => {
    const model = await loadModel(D, { threads: 2 });
    const inputs = [1, 2, 3].map((seed) => randomInput(1, 64, 64, seed));
    const expected: Outputs[] = [];
    for (const x of inputs) expected.push(await model.run(x, { outputs: ['fc7'] }));
    const running = inputs.map((x) => model.run(x, { outputs: ['fc7'] }));
    const disposed = model.dispose();
    await assert.rejects(model.run(inputs[0]), (e) => e instanceof VggError && e.code === 'E_DISPOSED');
    const results = await Promise.all(running);
    await disposed;
    results.forEach((r, i) => assert.ok(sameBits(r, expected[i]), `queued run ${i} changed`));
    assert.equal(model.pending, 0);
  });

  it('pending still counts the queued runs while dispose drains them', async () => {
    const model = await loadModel(D, { threads: 1 });
    const running = [1, 2, 3].map((seed) => model.run(randomInput(2, 128, 128, seed)));
    const disposed = model.dispose();
    const during = model.pending;
    await Promise.all([...running, disposed]);
    assert.ok(during >= 3, `pending was ${during} with 3 runs still queued`);
    assert.equal(model.pending, 0);
  });

  it('a second dispose resolves only when the first has drained the queue', async () => {
    const model = await loadModel(D, { threads: 1 });
    let settled = 0;
    const running = [1, 2, 3].map((seed) => model.run(randomInput(2, 128, 128, seed)).then(() => { settled++; }));
    const first = model.dispose();
    await model.dispose();
    assert.equal(settled, 3, 'runs were still queued when the second dispose resolved');
    await Promise.all([...running, first]);
  });

  describe('process and worker ends (in a child process)', function () {
    it('a model never disposed does not keep the process alive, and the exit is clean', () => {
      const r = child(`(async () => {
        const m = await loadModel(fixture('D.weights.safetensors'), { threads: 2 });
        const out = await m.run(randomInput(1, 64, 64));
        console.log('ran', out.prob.data.length);
      })();`, 20_000);
      assert.equal(r.status, 0, r.report);
      assert.match(r.stdout, /ran 10/, r.report);
    });

    it('terminating a worker with runs in flight and queued does not crash the process', () => {
      const r = child(`
        const { Worker } = require('node:worker_threads');
        const body = \`
          const { parentPort } = require('node:worker_threads');
          const { loadModel } = require(\${JSON.stringify(require.resolve(${JSON.stringify(path.resolve(__dirname, '../lib/model'))}))});
          const { fixture, randomInput } = require(\${JSON.stringify(require.resolve(${JSON.stringify(path.resolve(__dirname, 'helpers'))}))});
          (async () => {
            const m = await loadModel(fixture('D.weights.safetensors'), { threads: 1 });
            const x = randomInput(4, 512, 512);
            await m.run(x);
            for (let i = 0; i < 4; i++) m.run(x).catch(() => {});
            parentPort.postMessage('queued');
          })();\`;
        (async () => {
          for (let round = 0; round < 4; round++) {
            const w = new Worker(body, { eval: true });
            await new Promise((resolve, reject) => { w.once('message', resolve); w.once('error', reject); });
            const t = performance.now();
            await w.terminate();
            console.log('round', round, 'terminate took', Math.round(performance.now() - t), 'ms');
          }
          console.log('done');
        })();`, 60_000);
      assert.equal(r.status, 0, r.report);
      assert.match(r.stdout, /done/, r.report);
    });

    // Mapped weights share the page cache; the price, as for every mmap loader, is that a file
    // must be replaced by rename, never rewritten in place (README, Limits).
    it('a live model is unaffected when its weights file is replaced by rename', () => {
      const file = path.join(tmpDir(), 'replaced.safetensors');
      const r = child(`(async () => {
        const fs = require('node:fs');
        const file = ${JSON.stringify(file)};
        fs.copyFileSync(fixture('D.weights.safetensors'), file);
        const m = await loadModel(file, { threads: 1 });
        const x = randomInput(1, 64, 64);
        const before = await m.run(x, { outputs: ['fc8'] });
        fs.copyFileSync(fixture('E.weights.safetensors'), file + '.new');
        fs.renameSync(file + '.new', file);
        const same = (a, b) => Buffer.from(a.fc8.data.buffer).equals(Buffer.from(b.fc8.data.buffer));
        const after = await m.run(randomInput(1, 96, 96), { outputs: ['fc8'] });  // a new shape re-reads the weights
        const again = await m.run(x, { outputs: ['fc8'] });
        const fresh = await loadModel(file, { threads: 1 });
        console.log('unchanged', same(before, again), after.fc8.data.every(Number.isFinite), 'reloaded', fresh.info.arch);
        await Promise.all([m.dispose(), fresh.dispose()]);
      })();`);
      assert.equal(r.status, 0, r.report);
      assert.match(r.stdout, /unchanged true true reloaded E/, r.report);
    });
  });
});
