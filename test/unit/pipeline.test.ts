import * as assert from 'node:assert/strict';
import { batches, mapAhead } from '../../lib/tasks/pipeline';

async function* count(n: number, failAt = -1): AsyncGenerator<number> {
  for (let i = 0; i < n; i++) {
    if (i === failAt) throw new Error(`source failed at ${i}`);
    yield i;
  }
}

const collect = async <T>(items: AsyncIterable<T>): Promise<T[]> => {
  const out: T[] = [];
  for await (const item of items) out.push(item);
  return out;
};

const tick = () => new Promise((resolve) => setImmediate(resolve));

describe('unit: pipeline', () => {
  it('mapAhead keeps input order whatever order the calls finish in', async () => {
    const delays = [30, 0, 20, 5, 10, 0, 25];
    const out = await collect(mapAhead(count(7), 3, (i) => new Promise<number>((r) => setTimeout(() => r(i * 10), delays[i]))));
    assert.deepEqual(out, [0, 10, 20, 30, 40, 50, 60]);
  });

  it('mapAhead starts at most `ahead` calls before their results are taken', async () => {
    let started = 0;
    const results = mapAhead(count(100), 4, async (i) => { started++; return i; });
    const it = results[Symbol.asyncIterator]();
    assert.equal((await it.next()).value, 0);
    await tick();
    assert.ok(started <= 5, `${started} calls started after one result was taken`);
    await it.return?.(undefined);
  });

  it('mapAhead rethrows a failed call at its position, after the results before it', async () => {
    const seen: number[] = [];
    await assert.rejects(async () => {
      for await (const v of mapAhead(count(6), 3, async (i) => { if (i === 3) throw new Error('call 3'); return i; })) seen.push(v);
    }, /call 3/);
    assert.deepEqual(seen, [0, 1, 2]);
  });

  it('mapAhead gives the results of the items a failing source gave, then its error', async () => {
    const seen: number[] = [];
    await assert.rejects(async () => {
      for await (const v of mapAhead(count(10, 4), 3, async (i) => i)) seen.push(v);
    }, /source failed at 4/);
    assert.deepEqual(seen, [0, 1, 2, 3]);
  });

  it('batches groups consecutive items, the last batch short, and a failure after the short batch', async () => {
    assert.deepEqual(await collect(batches(count(7), 3)), [[0, 1, 2], [3, 4, 5], [6]]);
    const seen: number[][] = [];
    await assert.rejects(async () => {
      for await (const b of batches(count(10, 5), 2)) seen.push(b);
    }, /source failed at 5/);
    assert.deepEqual(seen, [[0, 1], [2, 3], [4]]);
  });
});
