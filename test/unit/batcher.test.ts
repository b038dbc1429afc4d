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

  it('starts the batch queued behind a running one as it ends, without maxDelayMs, and before handing out its answers', async () => {
    const runner = new Doubler();
    let release!: () => void;
    const held = new Promise<void>((resolve) => { release = resolve; });
    const gated = { run: async (input: Tensor, options?: RunOptions) => { if (runner.runs.length === 0) await held; return runner.run(input, options); } };
    const batcher = new Batcher(gated, { maxBatch: 8, maxDelayMs: 300 });
    const first = batcher.submit(image(1), { outputs: ['fc7'] });
    // The first image found the engine free: it waited maxDelayMs for company, and runs (held) now.
    await new Promise((resolve) => setTimeout(resolve, 400));
    const second = batcher.submit(image(2), { outputs: ['fc7'] });
    const t0 = performance.now();
    release();
    await first;
    // The second waited through the first batch: it went to the engine before the first one's answer came.
    assert.deepEqual(runner.runs, [[1], [2]]);
    await second;
    assert.ok(performance.now() - t0 < 150, `the second batch waited ${performance.now() - t0} ms`);
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

  it('pads a batch where the measured times say padding is cheap, splits it where they say it is not', async () => {
    const submitFive = async (batcher: Batcher) => {
      await Promise.all([1, 2, 3, 4, 5].map((v) => batcher.submit(image(v), { outputs: ['fc7'] })));
      await batcher.close();
    };
    // Before any measurement: padded to 8, as always.
    const unmeasured = new Doubler();
    await submitFive(new Batcher(unmeasured, { maxBatch: 8, maxDelayMs: 20 }));
    assert.deepEqual(unmeasured.runs, [[1, 2, 3, 4, 5, 0, 0, 0]]);
    // A CPU: 8 images take twice 4. Five run as 4 and 1, no zero image computed.
    const cpu = new Doubler();
    const onCpu = new Batcher(cpu, { maxBatch: 8, maxDelayMs: 20 });
    onCpu.runTimes.observe(4, 40);
    onCpu.runTimes.observe(8, 80);
    onCpu.runTimes.observe(1, 10);
    assert.equal(onCpu.estimateMs(5), 40 + 10);
    await submitFive(onCpu);
    assert.deepEqual(cpu.runs.slice(0, 2), [[1, 2, 3, 4], [5]]);
    // A GPU: 8 images cost little more than 4. Five are padded to 8.
    const gpu = new Doubler();
    const onGpu = new Batcher(gpu, { maxBatch: 8, maxDelayMs: 20 });
    onGpu.runTimes.observe(4, 40);
    onGpu.runTimes.observe(8, 45);
    assert.equal(onGpu.estimateMs(5), 45);
    await submitFive(onGpu);
    assert.deepEqual(gpu.runs, [[1, 2, 3, 4, 5, 0, 0, 0]]);
  });

  it('estimates the wait from the images ahead and refuses past maxLatencyMs with retryAfterMs; admit holds places until submit or release', async () => {
    const refusals: string[] = [];
    const batcher = new Batcher(new Doubler(), { maxBatch: 4, maxDelayMs: 10, maxQueue: 12, maxLatencyMs: 100, onRefuse: (r) => refusals.push(r) });
    assert.equal(batcher.estimateMs(), undefined);
    // Nothing measured: admitted whatever the queue.
    const early = batcher.admit(5);
    early.release();
    // A batch of 4 takes 40 ms, and a batch of 1 or 2 (not measured) the same per image.
    batcher.runTimes.observe(4, 40);
    assert.equal(batcher.estimateMs(1), 10);
    assert.equal(batcher.estimateMs(9), 40 + 40 + 10);
    const held = batcher.admit(3);
    assert.equal(batcher.estimateMs(1), 40);
    // 3 held + 10 asked is over maxQueue.
    assert.throws(() => batcher.admit(10), (e: VggError) => e.code === 'E_BUSY' && /queue is full/.test(e.message) && e.retryAfterMs === undefined);
    const more = batcher.admit(2);
    more.release();
    more.release(); // idempotent
    // 3 held + 8 asked: batches of 4, 4, then 2 and 1 (cheaper than 3 padded to 4): 40 + 40 + 20 + 10 = 110 ms, 10 ms over.
    batcher.runTimes.observe(2, 20);
    assert.throws(() => batcher.admit(8), (e: VggError) => e.code === 'E_BUSY' && /about 110 ms/.test(e.message) && Math.abs(e.retryAfterMs! - 10) < 1e-9);
    assert.deepEqual(refusals, ['queue_full', 'latency']);
    // submit with the admission takes its place (not checked again); the rest is given back.
    const answer = await batcher.submit(image(7), { outputs: ['fc7'], admission: held });
    assert.equal(answer.fc7.data[0], 14);
    held.release();
    // Nothing held or queued any more: a new image waits for its own intake (just measured) and its batch alone.
    assert.ok(batcher.runTimes.intakeMs! >= 0);
    assert.equal(batcher.estimateMs(1), batcher.runTimes.intakeMs! + batcher.runTimes.cautiousMs(1)!);
    await batcher.close();
  });

  it('counts the intake of a request: where its image is ready after the engine frees, the next batch waits for it, up to a one-image batch', async () => {
    const runner = new Doubler();
    const batcher = new Batcher(runner, { maxBatch: 8, maxDelayMs: 0, maxLatencyMs: 1000 });
    batcher.runTimes.observe(1, 40);
    batcher.runTimes.observe(2, 80);
    batcher.runTimes.observeIntake(30);
    // Nothing running: its intake, then a batch of one.
    assert.equal(batcher.estimateMs(1), 30 + 40);
    // One queued, one admitted and decoding: the batch of three starts when the new one is ready (30 ms, within the 40 ms hold).
    const decoding = batcher.admit(1);
    const queued = batcher.submit(image(1), { outputs: ['fc7'] });
    assert.equal(batcher.estimateMs(1), 30 + 40 * 3);
    // An intake longer than the hold: the batch ahead runs without it, the new image after.
    batcher.runTimes.observeIntake(1000);
    assert.ok(batcher.runTimes.intakeMs! > 40, String(batcher.runTimes.intakeMs));
    assert.equal(batcher.estimateMs(1), Math.max(80, batcher.runTimes.intakeMs!) + 40);
    // The held batch: the queued image waits for the admitted one, then both run together.
    await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(runner.runs, []);
    const late = batcher.submit(image(2), { outputs: ['fc7'], admission: decoding });
    await Promise.all([queued, late]);
    assert.deepEqual(runner.runs, [[1, 2]]);
    // Held no longer than a one-image batch (40 ms here) for an admission that never submits.
    const never = batcher.admit(1);
    const t0 = performance.now();
    await batcher.submit(image(3), { outputs: ['fc7'] });
    const waited = performance.now() - t0;
    never.release();
    assert.ok(waited >= 30 && waited < 1000, `waited ${waited.toFixed(0)} ms`);
    await batcher.close();
  });

  it('refuses an image that would make one admitted before it late: joining its batch would make that batch end too late', async () => {
    const batcher = new Batcher(new Doubler(), { maxBatch: 8, maxDelayMs: 10, maxLatencyMs: 150 });
    batcher.runTimes.observe(1, 25);
    batcher.runTimes.observe(4, 100);
    batcher.runTimes.observe(8, 200);
    // Five admitted: a batch of 4 (100 ms), then the fifth alone (25 ms), due at 150 ms.
    const five = batcher.admit(5);
    await new Promise((r) => setTimeout(r, 15));
    // A sixth would have its own answer in time (4, then 2: 150 ms), but would make the fifth's batch end 15 ms or more after its deadline.
    assert.equal(Math.round(batcher.estimateMs(1)!), 150);
    assert.throws(() => batcher.admit(1), (e: VggError) => e.code === 'E_BUSY' && /about 150 ms/.test(e.message));
    five.release();
    assert.doesNotThrow(() => batcher.admit(1).release());
  });

  it('tells a crowd refused together to come back spread out, the pace of the queue apart, and counts at most maxBatch of them', () => {
    const batcher = new Batcher(new Doubler(), { maxBatch: 4, maxDelayMs: 10, maxQueue: 100, maxLatencyMs: 100 });
    batcher.runTimes.observe(1, 25);
    batcher.runTimes.observe(2, 50);
    batcher.runTimes.observe(4, 100);
    batcher.admit(4);
    const retries: number[] = [];
    for (let i = 0; i < 8; i++) {
      assert.throws(() => batcher.admit(1), (e: VggError) => {
        retries.push(e.retryAfterMs!);
        return e.code === 'E_BUSY';
      });
    }
    // 4 ahead, then 1 (125 ms: 25 over); behind one refused 2 (150: 50 over), and so on; from the fifth on, 4 counted.
    assert.deepEqual(retries.map((ms) => Math.round(ms)), [25, 50, 75, 100, 125, 125, 125, 125]);
  });

  it('counts the spread of the run times: where batches vary, a wait is their average plus twice their mean deviation, pooled over sizes', () => {
    const steady = new Batcher(new Doubler(), { maxBatch: 4, maxDelayMs: 0, maxLatencyMs: 100 });
    for (let i = 0; i < 6; i++) steady.runTimes.observe(4, 40);
    assert.equal(steady.runTimes.cautiousMs(4), 40);
    steady.admit(4);
    // 4 held and 4 more: two batches of 40 ms, within 100.
    assert.equal(steady.estimateMs(4), 80);
    assert.doesNotThrow(() => steady.admit(4));

    // The same average, but batches of 20 and 60 ms in turn (a shared, noisy CPU).
    const noisy = new Batcher(new Doubler(), { maxBatch: 4, maxDelayMs: 0, maxLatencyMs: 100 });
    for (let i = 0; i < 3; i++) {
      noisy.runTimes.observe(4, 20);
      noisy.runTimes.observe(4, 60);
    }
    const mean = noisy.runTimes.batchMs(4)!;
    assert.ok(mean > 35 && mean < 45, String(mean));
    assert.ok(noisy.runTimes.cautiousMs(4)! > mean + 30, String(noisy.runTimes.cautiousMs(4)));
    noisy.admit(4);
    // Two batches at their averages would be about 80 ms; with the spread they end past 100 often.
    assert.throws(() => noisy.admit(4), (e: VggError) => e.code === 'E_BUSY' && /about 19\d ms/.test(e.message));

    // One slow batch of 4, and from then on batches of 1 alone: the spread, a share of the time
    // and pooled over sizes, fades with each of them; the 4s do not keep it while they do not run.
    const once = new Batcher(new Doubler(), { maxBatch: 4, maxDelayMs: 0, maxLatencyMs: 100 });
    for (let i = 0; i < 5; i++) once.runTimes.observe(4, 40);
    once.runTimes.observe(4, 200);
    const margin = () => once.runTimes.cautiousMs(4)! / once.runTimes.batchMs(4)!;
    assert.ok(margin() > 3, String(margin()));
    for (let i = 0; i < 6; i++) once.runTimes.observe(1, 10);
    assert.ok(margin() < 1.5, String(margin()));
  });

  it('admits an image that would run at once even when one batch takes longer than maxLatencyMs, and measures again', async () => {
    const batcher = new Batcher(new Doubler(), { maxBatch: 1, maxDelayMs: 0, maxLatencyMs: 100 });
    batcher.runTimes.observe(1, 500);
    const alone = batcher.admit(1);
    // Now one is ahead: the next would wait 1000 ms.
    assert.throws(() => batcher.admit(1), (e: VggError) => e.code === 'E_BUSY' && Math.abs(e.retryAfterMs! - 900) < 1e-9);
    await batcher.submit(image(1), { outputs: ['fc7'], admission: alone });
    // The run (a fraction of a millisecond) pulled the average down.
    assert.ok(batcher.runTimes.batchMs(1)! < 500 * 0.71, String(batcher.runTimes.batchMs(1)));
    await batcher.close();
  });

  it('checks its options with the argument named', () => {
    assert.throws(() => new Batcher(new Doubler(), { maxBatch: 0 }), /Expected a positive integer for maxBatch but received 0/);
    assert.throws(() => new Batcher(new Doubler(), { maxDelayMs: -1 }), /an integer of at least 0 for maxDelayMs/);
    assert.throws(() => new Batcher(new Doubler(), { maxLatencyMs: 0 }), /Expected a positive integer for maxLatencyMs but received 0/);
  });
});
