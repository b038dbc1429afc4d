import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { VggError } from '../../lib/errors';
import { loadModel } from '../../lib/model';
import { packWeights } from '../../lib/tasks/pack';
import { fixture, randomInput, tmpDir } from '../helpers';

/** The header of a packed file, and the file with a header edited in place (same length: its JSON padded with spaces). */
function header(bytes: Buffer): { tensors: { kind: string; layer: number; offset: number; bytes: number }[]; version: number } {
  return JSON.parse(bytes.subarray(16, 16 + Number(bytes.readBigUInt64LE(8))).toString('utf8'));
}
function withHeader(bytes: Buffer, edit: (h: Record<string, unknown>) => void): Buffer {
  const length = Number(bytes.readBigUInt64LE(8));
  const h = header(bytes) as unknown as Record<string, unknown>;
  edit(h);
  const json = Buffer.from(JSON.stringify(h));
  assert.ok(json.length <= length);
  const out = Buffer.from(bytes);
  out.fill(0x20, 16, 16 + length);
  json.copy(out, 16);
  return out;
}

describe('faults: damaged data in a packed file', function () {
  this.timeout(120_000);
  let file: string;
  let bytes: Buffer;
  const D = fixture('D.weights.safetensors');
  before(async () => {
    file = path.join(tmpDir(), 'D.packed');
    await packWeights(D, file, { threads: 2, shapes: [[1, 32, 32, 'fixed']] });
    bytes = fs.readFileSync(file);
  });
  const write = (b: Buffer) => { const f = path.join(tmpDir(), 'damaged.packed'); fs.writeFileSync(f, b); return f; };

  it('a flipped bit in a tensor\'s data is E_WEIGHTS_FORMAT naming the tensor; verify: false loads it anyway', async () => {
    const h = header(bytes);
    const i = h.tensors.findIndex((t) => t.kind === 'weights' && t.layer === 4);
    const t = h.tensors[i];
    const damaged = Buffer.from(bytes);
    damaged[t.offset + (t.bytes >> 1)] ^= 0x10;
    const f = write(damaged);
    await assert.rejects(loadModel(f, { threads: 1 }),
      (e: unknown) => e instanceof VggError && e.code === 'E_WEIGHTS_FORMAT' && e.message.includes(`tensor ${i} (weights of layer 4) is damaged`));
    const trusting = await loadModel(f, { threads: 1, verify: false });
    try {
      const out = await trusting.run(randomInput(1, 32, 32), { outputs: ['prob'] });
      assert.equal(out.prob.data.length, 10);
    } finally {
      await trusting.dispose();
    }
  });

  it('the undamaged file loads and verifies', async () => {
    const model = await loadModel(file, { threads: 1 });
    await model.dispose();
  });

  it('a version 1 file, which has no checksums, is refused with how to pack it again', async () => {
    const old = write(withHeader(bytes, (h) => { h.version = 1; for (const t of h.tensors as Record<string, unknown>[]) delete t.crc32; }));
    await assert.rejects(loadModel(old), (e: unknown) => e instanceof VggError && e.code === 'E_WEIGHTS_FORMAT' && /older vggnet.*vgg pack --weights ORIGINAL/.test(e.message));
  });

  it('options.verify must be a boolean', async () => {
    await assert.rejects(loadModel(file, { verify: 'no' as never }), (e: unknown) => e instanceof VggError && e.code === 'E_ARG' && /options\.verify/.test(e.message));
  });
});
