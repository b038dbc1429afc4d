import { strict as assert } from 'node:assert';
import { VggError } from '../../lib/errors';
import { loadModel, type Model } from '../../lib/model';
import { fixture, randomInput } from '../helpers';

/** Memory the caller can take away while a run waits in the queue. */
describe('faults: an input transferred or detached', function () {
  let model: Model;
  before(async () => { model = await loadModel(fixture('D.weights.safetensors'), { threads: 2 }); });
  after(() => model?.dispose());

  it('an input transferred while its run is queued is computed from the data it had when run was called', async () => {
    const input = randomInput(2, 64, 64, 3);
    const expected = await model.run({ data: input.data.slice(), shape: input.shape }, { outputs: ['fc7'] });
    for (let round = 0; round < 3; round++) {
      // A big run ahead keeps ours in the queue while its buffer moves to a new owner who overwrites it.
      const ahead = model.run(randomInput(8, 96, 96, 5), { outputs: ['prob'] });
      const data = input.data.slice();
      const queued = model.run({ data, shape: input.shape }, { outputs: ['fc7'] });
      const moved = new Float32Array(structuredClone(data.buffer as ArrayBuffer, { transfer: [data.buffer as ArrayBuffer] }));
      assert.equal(data.length, 0, 'the caller\'s array is detached');
      moved.fill(Number.NaN);
      const [got] = await Promise.all([queued, ahead]);
      assert.deepEqual(got.fc7.data, expected.fc7.data, `round ${round}`);
    }
  });

  it('an input detached before run is E_ARG naming input.data', async () => {
    const { data, shape } = randomInput(1, 32, 32);
    structuredClone(data.buffer, { transfer: [data.buffer as ArrayBuffer] });
    await assert.rejects(model.run({ data, shape }),
      (e: unknown) => e instanceof VggError && e.code === 'E_ARG' && /input\.data/.test(e.message) && /detached/.test(e.message));
  });
});
