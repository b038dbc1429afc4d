import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';
import { fixture, tmpDir } from '../helpers';
import { TestRedis } from '../redis';
import { images, vgg } from './tools';

/** A Redis without persistence restarts empty: `vgg job wait` polled forever; now it says so. */
describe('faults: a job Redis has lost', function () {
  this.timeout(120_000);
  const redis = new TestRedis();
  let input: string;

  before(async function () {
    if (redis.external) this.skip(); // the test empties Redis
    await redis.start();
    input = await images(4);
  });
  after(() => redis.close());

  function submit(): string {
    const r = vgg(['job', 'submit', input, '--weights', fixture('D.weights.safetensors'), '--out', path.join(tmpDir(), 'job'), '--shard-size', '2', '--redis', redis.url]);
    assert.equal(r.status, 0, r.stderr);
    return r.stdout.trim();
  }
  const redisCli = (...args: string[]) => execFileSync('redis-cli', ['-p', String(redis.port), ...args], { encoding: 'utf8' });

  it('vgg job wait and status on a job whose every key is gone exit 3 with E_JOB_LOST and what to do', () => {
    const id = submit();
    redisCli('FLUSHALL'); // what a restart without persistence leaves
    for (const command of ['wait', 'status']) {
      const r = vgg(['job', command, id, '--redis', redis.url], { timeout: 30_000 });
      assert.equal(r.signal, null, `vgg job ${command} hung until killed`);
      assert.equal(r.status, 3, r.stderr);
      assert.match(r.stderr, /E_JOB_LOST/);
      assert.match(r.stderr, /Submit it again.*appendonly yes/);
    }
  });

  it('vgg job wait on a job whose shards are gone (its spec kept) exits 3 instead of polling forever', () => {
    const id = submit();
    redisCli('EVAL', "for _, k in ipairs(redis.call('KEYS', 'bull:*')) do redis.call('DEL', k) end", '0');
    const r = vgg(['job', 'wait', id, '--redis', redis.url, '--interval-ms', '100'], { timeout: 30_000 });
    assert.equal(r.signal, null, 'vgg job wait hung until killed');
    assert.equal(r.status, 3, r.stderr);
    assert.match(r.stderr, /E_JOB_LOST: Redis knows nothing of shard 0/);
  });
});
