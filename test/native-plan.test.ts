import { strict as assert } from 'node:assert';
import { FC6_WINDOW, HEAD_BLOBS } from '../lib/arch/topology';
import { loadModel } from '../lib/model';
import { VggError } from '../lib/errors';
import { native, type NativePlan } from '../lib/native';
import { fixture, randomInput } from './helpers';

// TypeScript numbers the blobs and sizes fc6's window (lib/arch/topology.ts) and sends both
// with the plan; the addon computes its own (native/plan.h) and must refuse a plan that
// disagrees, rather than fill the captures with the wrong blobs.
describe('native plan', () => {
  const addon = native();
  const Executor = addon.Executor;
  let plan: NativePlan; // what loadModel sends for D

  /** Runs `fn` with loadModel's plans passed through `edit` on their way to the addon. */
  async function withPlans<T>(edit: (p: NativePlan) => NativePlan, fn: () => Promise<T>): Promise<T> {
    addon.Executor = function (p: NativePlan) { return new Executor(edit(p)); } as unknown as typeof Executor;
    try {
      return await fn();
    } finally {
      addon.Executor = Executor;
    }
  }

  before(async () => {
    const model = await withPlans((p) => (plan = p), () => loadModel(fixture('D.weights.safetensors'), { threads: 1 }));
    await model.dispose();
  });

  it("carries topology's head blobs and fc6 window, which the addon accepts and runs", async () => {
    assert.deepEqual(plan.headBlobs, HEAD_BLOBS);
    assert.equal(plan.fc6Window, FC6_WINDOW);
    const executor = new Executor(plan);
    try {
      await executor.ready;
      const input = randomInput(1, 224, 224);
      const prob = new Float32Array(1000);
      await executor.run(input.data, 1, 224, 224, false, [[plan.features.length + HEAD_BLOBS.fixed.indexOf('prob'), prob]]);
      assert.ok(Math.abs(prob.reduce((s, v) => s + v, 0) - 1) < 1e-4);
    } finally {
      await executor.dispose();
    }
  });

  const refused = (p: NativePlan, message: RegExp) => assert.throws(() => new Executor(p), (e: Error) => {
    assert.match(e.message, message);
    assert.match(e.message, /rebuild the addon from these sources \(npm run build:native\)$/);
    return true;
  });

  it('refuses head blobs in another order, with a name more or less, or none', () => {
    const dense = ['fc6', 'fc7', 'fc8', 'fc8_map', 'prob'];
    refused({ ...plan, headBlobs: { ...plan.headBlobs, dense } },
      /the plan's dense head blobs are fc6, fc7, fc8, fc8_map, prob but the addon's are fc6, fc7, fc8_map, fc8, prob/);
    refused({ ...plan, headBlobs: { ...plan.headBlobs, fixed: ['avgpool', 'fc6', 'fc7', 'fc8', 'prob'] } },
      /the plan's fixed head blobs are avgpool, fc6, fc7, fc8, prob but the addon's are fc6, fc7, fc8, prob/);
    refused({ ...plan, headBlobs: { ...plan.headBlobs, fixed: ['fc6', 'fc7', 'fc8'] } }, /fixed head blobs are fc6, fc7, fc8 but/);
    const { headBlobs: _, ...older } = plan;
    refused(older as NativePlan, /the plan's fixed head blobs are none but the addon's are fc6, fc7, fc8, prob/);
  });

  it('refuses another fc6 window', () => {
    refused({ ...plan, fc6Window: 6 }, /the plan's fc6 window is 6 but the addon's is 7/);
    const { fc6Window: _, ...older } = plan;
    refused(older as NativePlan, /the plan's fc6 window is undefined but the addon's is 7/);
  });

  it('loadModel turns a refused plan into E_BACKEND', async () => {
    await assert.rejects(withPlans((p) => ({ ...p, fc6Window: 5 }), () => loadModel(fixture('D.weights.safetensors'), { threads: 1 })),
      (e: VggError) => {
        assert.ok(e instanceof VggError);
        assert.equal(e.code, 'E_BACKEND');
        assert.match(e.message, /^the native addon refused the network: .*the plan's fc6 window is 5 but the addon's is 7/);
        return true;
      });
  });
});
