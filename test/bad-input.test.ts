// Every bad weights file, input and option ends in a VggError with a stable code and a message
// that names what was wrong, and the process carries on.
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { VggError, type VggErrorCode } from '../lib/errors';
import { loadModel, type Model } from '../lib/model';
import { editHeader, fixture, joinSafetensors, randomInput, repack, splitSafetensors, tmpDir, writeTemp } from './helpers';

const D = fixture('D.weights.safetensors');
const A = fixture('A.weights.safetensors');

/** A predicate for assert.rejects: a VggError with this code whose message mentions every `names`. */
function vggError(code: VggErrorCode, ...names: string[]) {
  return (e: unknown) => {
    assert.ok(e instanceof VggError, `expected a VggError, got ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
    assert.equal(e.code, code, `code of "${e.message}"`);
    for (const n of names) assert.ok(e.message.includes(n), `"${e.message}" should name ${n}`);
    return true;
  };
}

/** Loads forged bytes; the error must be `code` and name the file plus `names`. */
async function rejectsBytes(bytes: Uint8Array, code: VggErrorCode, ...names: string[]) {
  const file = writeTemp(bytes);
  await assert.rejects(loadModel(file, { threads: 1 }), vggError(code, file, ...names));
}

describe('bad weights files', function () {
  it('a file cut off mid-data is E_WEIGHTS_FORMAT', async () => {
    const bytes = fs.readFileSync(D);
    await rejectsBytes(bytes.subarray(0, bytes.length - 1001), 'E_WEIGHTS_FORMAT', 'truncated');
  });

  it('a file cut off inside the header is E_WEIGHTS_FORMAT', async () => {
    await rejectsBytes(fs.readFileSync(D).subarray(0, 100), 'E_WEIGHTS_FORMAT', 'header length');
  });

  it('a header length past the end of the file is E_WEIGHTS_FORMAT', async () => {
    const bytes = Buffer.from(fs.readFileSync(D));
    bytes.writeBigUInt64LE(BigInt(bytes.length - 7), 0);
    await rejectsBytes(bytes, 'E_WEIGHTS_FORMAT', 'header length');
    bytes.writeBigUInt64LE(2n ** 64n - 1n, 0);
    await rejectsBytes(bytes, 'E_WEIGHTS_FORMAT', 'header length');
    bytes.writeBigUInt64LE(0n, 0);
    await rejectsBytes(bytes, 'E_WEIGHTS_FORMAT', 'header length');
  });

  it('a header that is not JSON, or not a JSON object, is E_WEIGHTS_FORMAT', async () => {
    const { data } = splitSafetensors(fs.readFileSync(D));
    await rejectsBytes(joinSafetensors('{"features.0.weight": nope}', data), 'E_WEIGHTS_FORMAT', 'JSON');
    await rejectsBytes(joinSafetensors(Buffer.from([0x7b, 0xff, 0xfe, 0x7d]).toString('latin1'), data), 'E_WEIGHTS_FORMAT', 'JSON');
    await rejectsBytes(joinSafetensors('[1, 2]', data), 'E_WEIGHTS_FORMAT', 'JSON object');
  });

  it('overlapping data_offsets are E_WEIGHTS_FORMAT', async () => {
    const bytes = editHeader(D, (h) => { h['features.0.bias'].data_offsets = [400, 416]; });
    await rejectsBytes(bytes, 'E_WEIGHTS_FORMAT', 'overlaps');
  });

  it('data_offsets past the end of the file, or reversed, are E_WEIGHTS_FORMAT', async () => {
    const past = editHeader(D, (h) => {
      const t = h['classifier.6.bias'];
      t.data_offsets = [t.data_offsets[0] + 1_000_000, t.data_offsets[1] + 1_000_000];
    });
    await rejectsBytes(past, 'E_WEIGHTS_FORMAT', 'classifier.6.bias');
    const reversed = editHeader(D, (h) => { h['features.0.bias'].data_offsets = [448, 432]; });
    await rejectsBytes(reversed, 'E_WEIGHTS_FORMAT', 'features.0.bias', 'data_offsets');
    const negative = editHeader(D, (h) => { h['features.0.bias'].data_offsets = [-16, 0]; });
    await rejectsBytes(negative, 'E_WEIGHTS_FORMAT', 'features.0.bias', 'data_offsets');
  });

  it('an unknown dtype is E_WEIGHTS_FORMAT', async () => {
    const bytes = editHeader(D, (h) => { h['features.2.weight'].dtype = 'F33'; });
    await rejectsBytes(bytes, 'E_WEIGHTS_FORMAT', 'features.2.weight', 'F33');
  });

  it('a shape that disagrees with data_offsets is E_WEIGHTS_FORMAT', async () => {
    const bytes = editHeader(D, (h) => { h['features.2.weight'].shape = [4, 4, 3, 2]; });
    await rejectsBytes(bytes, 'E_WEIGHTS_FORMAT', 'features.2.weight');
  });

  it('a non-float dtype for a weight is E_WEIGHTS_FORMAT', async () => {
    // I32 has F32's element size, so the file stays well formed.
    await rejectsBytes(editHeader(D, (h) => { h['features.0.weight'].dtype = 'I32'; }), 'E_WEIGHTS_FORMAT', 'features.0.weight', 'I32');
    const i64 = repack(D, (t) => {
      const w = t.get('classifier.3.bias')!;
      t.set('classifier.3.bias', { dtype: 'I64', shape: w.shape, data: new Uint8Array(w.data.length * 2) });
    });
    await rejectsBytes(i64, 'E_WEIGHTS_FORMAT', 'classifier.3.bias', 'I64');
  });

  it('F64 weights (a float, but not one the engine reads) are E_WEIGHTS_FORMAT', async () => {
    const bytes = repack(D, (t) => {
      const w = t.get('features.0.weight')!;
      const f32 = new Float32Array(w.data.slice().buffer);
      t.set('features.0.weight', { dtype: 'F64', shape: w.shape, data: new Uint8Array(Float64Array.from(f32).buffer) });
    });
    await rejectsBytes(bytes, 'E_WEIGHTS_FORMAT', 'features.0.weight', 'F64');
  });

  it('a missing tensor is E_WEIGHTS_MISSING', async () => {
    await rejectsBytes(repack(D, (t) => { t.delete('features.5.bias'); }), 'E_WEIGHTS_MISSING', 'features.5.bias');
    await rejectsBytes(repack(D, (t) => { t.delete('classifier.6.weight'); }), 'E_WEIGHTS_MISSING', 'classifier.6.weight');
  });

  it('a missing fc tensor is E_WEIGHTS_MISSING when the architecture is inferred (no metadata)', async () => {
    const bytes = repack(D, (t, meta) => { t.delete('classifier.0.weight'); delete meta.metadata; });
    await rejectsBytes(bytes, 'E_WEIGHTS_MISSING', 'classifier.0.weight');
  });

  it('an extra tensor is E_WEIGHTS_EXTRA', async () => {
    const bytes = repack(D, (t) => { t.set('features.99.weight', { dtype: 'F32', shape: [2], data: new Uint8Array(8) }); });
    await rejectsBytes(bytes, 'E_WEIGHTS_EXTRA', 'features.99.weight');
  });

  it('a 5x5 first conv is E_SHAPE, with and without metadata', async () => {
    const edit = (t: Map<string, { dtype: string; shape: number[]; data: Uint8Array }>) =>
      t.set('features.0.weight', { dtype: 'F32', shape: [4, 3, 5, 5], data: new Uint8Array(4 * 3 * 5 * 5 * 4) });
    await rejectsBytes(repack(D, edit), 'E_SHAPE', 'features.0.weight', '[4, 3, 5, 5]');
    await rejectsBytes(repack(D, (t, meta) => { edit(t); delete meta.metadata; }), 'E_SHAPE', 'features.0.weight');
  });

  it('an fc6 of the wrong width is E_SHAPE, with and without metadata', async () => {
    const edit = (t: Map<string, { dtype: string; shape: number[]; data: Uint8Array }>) =>
      t.set('classifier.0.weight', { dtype: 'F32', shape: [256, 1000], data: new Uint8Array(256 * 1000 * 4) });
    await rejectsBytes(repack(D, edit), 'E_SHAPE', 'classifier.0.weight', '[256, 1000]');
    await rejectsBytes(repack(D, (t, meta) => { edit(t); delete meta.metadata; }), 'E_SHAPE', 'classifier.0.weight');
  });

  it('metadata that disagrees with the tensors is E_SHAPE; unreadable metadata is E_WEIGHTS_FORMAT', async () => {
    await rejectsBytes(editHeader(D, (h) => { h.__metadata__['vgg.fc_hidden'] = '128'; }), 'E_SHAPE', 'classifier.0');
    await rejectsBytes(editHeader(D, (h) => { h.__metadata__['vgg.cfg'] = '[4, "M", '; }), 'E_WEIGHTS_FORMAT', 'vgg.cfg');
    await rejectsBytes(editHeader(D, (h) => { h.__metadata__['vgg.classes'] = 'ten'; }), 'E_WEIGHTS_FORMAT', 'vgg.classes');
    await rejectsBytes(editHeader(D, (h) => { h.__metadata__['vgg.cfg'] = '[4, "M", 0, "M"]'; }), 'E_WEIGHTS_FORMAT', 'cfg');
  });

  it('a nonexistent file and a directory are E_IO', async () => {
    const missing = path.join(tmpDir(), 'no-such.safetensors');
    await assert.rejects(loadModel(missing), vggError('E_IO', missing));
    const dir = tmpDir();
    await assert.rejects(loadModel(dir), vggError('E_IO', dir));
  });

  it('an empty file, and one of only 8 bytes, are E_WEIGHTS_FORMAT', async () => {
    await rejectsBytes(new Uint8Array(0), 'E_WEIGHTS_FORMAT');
    const eight = Buffer.alloc(8);
    eight.writeBigUInt64LE(2n);
    await rejectsBytes(eight, 'E_WEIGHTS_FORMAT');
  });

  it('a bad path argument is E_ARG', async () => {
    await assert.rejects(loadModel(''), vggError('E_ARG', 'path'));
    await assert.rejects(loadModel(42 as unknown as string), vggError('E_ARG', 'path'));
  });
});

describe('bad options to loadModel', function () {
  it('an unknown option is E_ARG naming it', async () => {
    await assert.rejects(loadModel(A, { thread: 1 } as never), vggError('E_ARG', 'thread'));
    await assert.rejects(loadModel(A, 'fixed' as never), vggError('E_ARG', 'options'));
  });

  for (const threads of [0, 1.5, 'x', -1, NaN, 1e9]) {
    it(`threads: ${typeof threads === 'string' ? JSON.stringify(threads) : threads} is E_ARG`, async () => {
      await assert.rejects(loadModel(A, { threads: threads as number }), vggError('E_ARG', 'options.threads'));
    });
  }

  it('an unknown head is E_ARG', async () => {
    await assert.rejects(loadModel(A, { head: 'sparse' as never }), vggError('E_ARG', 'options.head', 'sparse'));
  });
});

describe('bad inputs to run', function () {
  let model: Model;
  before(async () => { model = await loadModel(A, { threads: 1 }); });
  after(async () => { await model?.dispose(); });

  const ok = randomInput(1, 32, 32);

  it('a plain Array or a Float64Array as data is E_ARG naming input.data', async () => {
    await assert.rejects(model.run({ data: Array.from(ok.data) as never, shape: ok.shape }), vggError('E_ARG', 'input.data'));
    await assert.rejects(model.run({ data: Float64Array.from(ok.data) as never, shape: ok.shape }), vggError('E_ARG', 'input.data', 'Float64Array'));
  });

  it('data over a resizable or shared buffer is E_ARG: the native thread reads it while queued', async () => {
    const resizable = new (ArrayBuffer as unknown as new (n: number, o: object) => ArrayBuffer)(ok.data.byteLength, { maxByteLength: 2 * ok.data.byteLength });
    await assert.rejects(model.run({ data: new Float32Array(resizable), shape: ok.shape }), vggError('E_ARG', 'input.data'));
    const shared = new Float32Array(new SharedArrayBuffer(ok.data.byteLength));
    await assert.rejects(model.run({ data: shared, shape: ok.shape }), vggError('E_ARG', 'input.data'));
  });

  it('no tensor at all is E_ARG naming input', async () => {
    await assert.rejects(model.run(null as never), vggError('E_ARG', 'input'));
    await assert.rejects(model.run(ok.data as never), vggError('E_ARG', 'input.data'));
  });

  it('a shape of the wrong rank is E_SHAPE naming input.shape', async () => {
    await assert.rejects(model.run({ data: ok.data, shape: [3, 32, 32] }), vggError('E_SHAPE', 'input.shape'));
    await assert.rejects(model.run({ data: ok.data, shape: [1, 1, 3, 32, 32] }), vggError('E_SHAPE', 'input.shape'));
    await assert.rejects(model.run({ data: ok.data, shape: [1, 3, 32, -32] }), vggError('E_SHAPE', 'input.shape'));
  });

  it('channels other than 3 are E_SHAPE naming input.shape', async () => {
    await assert.rejects(model.run({ data: ok.data, shape: [3, 1, 32, 32] }), vggError('E_SHAPE', 'input.shape', 'channels'));
  });

  it('data whose length does not match the shape is E_SHAPE naming input', async () => {
    await assert.rejects(model.run({ data: ok.data.subarray(1), shape: ok.shape }), vggError('E_SHAPE', 'input'));
    await assert.rejects(model.run({ data: ok.data, shape: [2, 3, 32, 32] }), vggError('E_SHAPE', 'input'));
  });

  it('an input too small for the fixed head (16x16) is E_SHAPE', async () => {
    await assert.rejects(model.run(randomInput(1, 16, 16)), vggError('E_SHAPE', 'input', '32x32'));
    await assert.rejects(model.run(randomInput(1, 64, 16)), vggError('E_SHAPE', 'input'));
  });

  it('an input too small for the dense head (200x200) is E_SHAPE', async () => {
    await assert.rejects(model.run(randomInput(1, 200, 200), { head: 'dense' }), vggError('E_SHAPE', 'input', 'dense', '224x224'));
  });

  it('an unknown blob in outputs is E_ARG naming the blob', async () => {
    await assert.rejects(model.run(ok, { outputs: ['conv9_9'] }), vggError('E_ARG', 'conv9_9', 'options.outputs'));
    await assert.rejects(model.run(ok, { outputs: [] }), vggError('E_ARG', 'options.outputs'));
    await assert.rejects(model.run(ok, { outputs: ['prob', 'prob'] }), vggError('E_ARG', 'options.outputs'));
    await assert.rejects(model.run(ok, { outputs: 'prob' as never }), vggError('E_ARG', 'options.outputs'));
  });

  it('fc8_map with the fixed head is E_ARG naming fc8_map', async () => {
    await assert.rejects(model.run(ok, { outputs: ['fc8_map'] }), vggError('E_ARG', 'fc8_map'));
  });

  it('an unknown option or a bad head/flip in run is E_ARG naming it', async () => {
    await assert.rejects(model.run(ok, { output: ['prob'] } as never), vggError('E_ARG', 'output'));
    await assert.rejects(model.run(ok, { head: 'both' as never }), vggError('E_ARG', 'options.head'));
    await assert.rejects(model.run(ok, { flip: 1 as never }), vggError('E_ARG', 'options.flip'));
  });

  it('none of these broke the model: a good run still works', async () => {
    assert.equal(model.pending, 0);
    const out = await model.run(ok, { outputs: ['pool5', 'prob'] });
    assert.deepEqual(out.pool5.shape, [1, 32, 1, 1]);
    const sum = out.prob.data.reduce((a, b) => a + b, 0);
    assert.ok(Math.abs(sum - 1) < 1e-5, `prob sums to ${sum}`);
  });
});

describe('a disposed model', function () {
  it('run after dispose is E_DISPOSED, and dispose twice resolves', async () => {
    const model = await loadModel(A, { threads: 1 });
    await model.run(randomInput(1, 32, 32));
    await model.dispose();
    await assert.rejects(model.run(randomInput(1, 32, 32)), vggError('E_DISPOSED', 'disposed'));
    await model.dispose();
    await Promise.all([model.dispose(), model.dispose()]);
    assert.equal(model.pending, 0);
  });

  it('dispose twice at once resolves both', async () => {
    const model = await loadModel(A, { threads: 1 });
    await Promise.all([model.dispose(), model.dispose()]);
    await assert.rejects(model.run(randomInput(1, 32, 32)), vggError('E_DISPOSED'));
  });
});
