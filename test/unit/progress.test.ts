import * as assert from 'node:assert/strict';
import { IMAGES, MEGABYTES, SHARDS, duration, progressFields } from '../../lib/cli/progress';

describe('unit: progress', () => {
  it('shows no ETA before 3 s and 2% of the run: a first batch would make it wild', () => {
    // The 9 s run that first showed "ETA 5m0s": 1 image after 1 s.
    assert.equal(progressFields({ done: 1, from: 0, total: 60, failed: 0, ms: 1000 }, IMAGES).eta, '');
    assert.equal(progressFields({ done: 10, from: 0, total: 1000, failed: 0, ms: 5000 }, IMAGES).eta, ''); // 1%
    assert.equal(progressFields({ done: 30, from: 0, total: 60, failed: 0, ms: 4500 }, IMAGES).eta, 'ETA 5 s');
    assert.equal(progressFields({ done: 30, from: 0, total: undefined, failed: 0, ms: 4500 }, IMAGES).eta, '');
  });

  it("counts this run's items in the rate, not a resumed run's", () => {
    const f = progressFields({ done: 120, from: 100, total: 200, failed: 3, ms: 4000 }, IMAGES);
    assert.deepEqual(f, { gauge: `${'#'.repeat(18)}${'-'.repeat(12)}`, count: '120/200 images', rate: '5.0 images/s', eta: 'ETA 16 s', failures: ' | 3 failed' });
  });

  it('names the unit of the failures when it is not the unit of the count (job wait: images done, shards failed)', () => {
    const state = { done: 2000, from: 0, total: 5000, failed: 1, ms: 4000 };
    assert.equal(progressFields(state, IMAGES, SHARDS).failures, ' | 1 failed shard');
    assert.equal(progressFields({ ...state, failed: 2 }, IMAGES, SHARDS).failures, ' | 2 failed shards');
    assert.equal(progressFields(state, IMAGES).failures, ' | 1 failed');
  });

  it('shows the items under way (begun, not done) apart from those done, which a batch finishes together', () => {
    // extract, batch 32: the first batch is in the network, 40 images read and decoded behind it.
    const f = progressFields({ done: 0, begun: 40, from: 0, total: 100, failed: 0, ms: 2000 }, IMAGES);
    assert.equal(f.gauge, `${'+'.repeat(12)}${'-'.repeat(18)}`);
    assert.equal(f.count, '0/100 images, 40 under way');
    const g = progressFields({ done: 32, begun: 41, from: 0, total: 100, failed: 0, ms: 2500 }, IMAGES);
    assert.equal(g.gauge, `${'#'.repeat(9)}${'+'.repeat(3)}${'-'.repeat(18)}`);
    assert.equal(g.count, '32/100 images, 9 under way');
    assert.equal(g.rate, '12.8 images/s', 'the rate counts images done, not begun');
  });

  it('shows bytes as MB', () => {
    const f = progressFields({ done: 50e6, from: 0, total: 553e6, failed: 0, ms: 5000 }, MEGABYTES);
    assert.deepEqual(f, { gauge: `${'#'.repeat(2)}${'-'.repeat(28)}`, count: '50.0/553.0 MB', rate: '10.0 MB/s', eta: 'ETA 50 s', failures: '' });
    assert.equal(duration(200), '3 min 20 s');
  });
});
