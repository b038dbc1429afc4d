import * as assert from 'node:assert/strict';
import type { Outputs, RunOptions } from '../../lib/engine';
import { VggError } from '../../lib/errors';
import { Batcher } from '../../lib/serve/batcher';
import type { Tensor } from '../../lib/tensor';

/** A runner whose "fc7" of each image is its input times 2, and that records the batches it ran. */
class Doubler {
  runs: number[][] = [];
  async run(input: Tensor, options?: RunOptions): Promise<Outputs> {
    const n = input.shape[0];
    const per = input.data.length / n;
    this.runs.push(Array.from({ length: n }, (_, i) => input.data[i * per]));
    assert.deepEqual(options?.outputs, ['fc7']);
    return { fc7: { data: input.data.map((v) => v * 2), shape: [...input.shape] } };
  }
}

const image = (value: number, side = 2): Tensor => ({ data: new Float32Array(3 * side * side).fill(value), shape: [1, 3, side, side] });

describe('unit: batcher', () => {
  it('gathers concurrent images into one run, padded to a power of two, and answers each its own slice', async () => {
    const runner = new Doubler();
    const batcher = new Batcher(runner, { maxBatch: 8, maxDelayMs: 20 });
    const answers = await Promise.all([1, 2, 3].map((v) => batcher.submit(image(v), { outputs: ['fc7'] })));
    assert.deepEqual(runner.runs, [[1, 2, 3, 0]]);
    assert.deepEqual(answers.map((a) => [a.fc7.data[0], a.fc7.shape[0]]), [[2, 1], [4, 1], [6, 1]]);
    await batcher.close();
  });

  it('runs images of different sizes in different batches, never more than maxBatch', async () => {
    const runner = new Doubler();
    const batcher = new Batcher(runner, { maxBatch: 2, maxDelayMs: 10 });
    await Promise.all([image(1), image(2, 3), image(3), image(4), image(5, 3)].map((img) => batcher.submit(img, { outputs: ['fc7'] })));
    assert.deepEqual(runner.runs.map((r) => r.length).sort(), [1, 2, 2]);
    assert.ok(runner.runs.some((r) => r.includes(2) && r.includes(5)), JSON.stringify(runner.runs));
    await batcher.close();
  });

  it('refuses past maxQueue with E_BUSY and drops an aborted image from the queue', async () => {
    const runner = new Doubler();
    const batcher = new Batcher(runner, { maxBatch: 4, maxDelayMs: 50, maxQueue: 2 });
    const controller = new AbortController();
    const first = batcher.submit(image(1), { outputs: ['fc7'], signal: controller.signal });
    const second = batcher.submit(image(2), { outputs: ['fc7'] });
    await assert.rejects(batcher.submit(image(3), { outputs: ['fc7'] }), (e) => e instanceof VggError && e.code === 'E_BUSY');
    controller.abort(new Error('gone'));
    await assert.rejects(first, /gone/);
    await second;
    assert.deepEqual(runner.runs, [[2]]);
    await batcher.close();
  });

  it('checks its options with the argument named', () => {
    assert.throws(() => new Batcher(new Doubler(), { maxBatch: 0 }), /Expected a positive integer for maxBatch but received 0/);
    assert.throws(() => new Batcher(new Doubler(), { maxDelayMs: -1 }), /an integer of at least 0 for maxDelayMs/);
  });
});
