import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { VggError } from '../lib/errors';
import { readPth } from '../lib/weights/pth';
import { parseSafetensors, readF32 } from '../lib/weights/safetensors';
import { fixture } from './helpers';
import { call, dict, global, int, op, pickle, storedZip, str, tensor } from './forge-pth';

const f32 = (...values: number[]) => new Uint8Array(new Float32Array(values).buffer);

describe('readPth', () => {
  let dir: string;
  before(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vggnet-pth-')); });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  const write = (name: string, bytes: Uint8Array) => {
    const file = path.join(dir, name);
    fs.writeFileSync(file, bytes);
    return file;
  };
  const checkpoint = (name: string, dataPkl: Buffer, storages: Record<string, Uint8Array> = {}, extra: Record<string, Uint8Array> = {}) =>
    write(name, storedZip({
      'archive/data.pkl': dataPkl,
      ...Object.fromEntries(Object.entries(storages).map(([k, v]) => [`archive/data/${k}`, v])),
      ...extra,
    }));
  const rejects = (file: string, code: string, message: RegExp) =>
    assert.rejects(readPth(file), (e: unknown) => {
      assert.ok(e instanceof VggError, `expected a VggError, got ${e}`);
      assert.equal(e.code, code);
      assert.match(e.message, message);
      return true;
    });

  it('reads every tensor of D.pth bit for bit as the safetensors export has it', async () => {
    const expected = parseSafetensors(fs.readFileSync(fixture('D.weights.safetensors')), 'D.weights.safetensors');
    const tensors = await readPth(fixture('D.pth'));
    assert.deepEqual([...tensors.keys()].sort(), [...expected.tensors.keys()].sort());
    for (const [name, entry] of expected.tensors) {
      const got = tensors.get(name)!;
      assert.deepEqual(got.shape, entry.shape, name);
      const want = readF32(expected, entry);
      assert.deepEqual(new Uint32Array(got.data.buffer, got.data.byteOffset, got.data.length),
        new Uint32Array(want.buffer, want.byteOffset, want.length), name);
    }
  });

  it('keeps the state_dict order, unwraps {state_dict: ...}, gathers strided float16 views and skips num_batches_tracked', async () => {
    const half = new Uint8Array(new Uint16Array([0x0000, 0x3c00, 0x4000, 0x4200, 0x4400, 0x4500, 0x4600]).buffer); // 0..6
    const file = checkpoint('wrapped.pth', pickle(dict([
      ['epoch', int(7)],
      ['state_dict', dict([
        ['z.weight', call(global('torch._utils', '_rebuild_parameter'), tensor('FloatStorage', '1', 2, 0, [2], [1]), op(0x88), call(global('collections', 'OrderedDict')))],
        // the transpose of [[1, 2], [3, 4], [5, 6]]: offset 1, column-major strides
        ['a.weight', tensor('HalfStorage', '0', 7, 1, [2, 3], [1, 2])],
        ['bn.num_batches_tracked', tensor('LongStorage', '2', 1, 0, [], [])],
      ])],
    ])), { 0: half, 1: f32(0.5, -1), 2: new Uint8Array(8) });
    const tensors = await readPth(file);
    assert.deepEqual([...tensors.keys()], ['z.weight', 'a.weight']);
    assert.deepEqual(tensors.get('z.weight'), { data: new Float32Array([0.5, -1]), shape: [2] });
    assert.deepEqual(tensors.get('a.weight'), { data: new Float32Array([1, 3, 5, 2, 4, 6]), shape: [2, 3] });
  });

  it('rejects a truncated D.pth', async () => {
    const whole = fs.readFileSync(fixture('D.pth'));
    await rejects(write('truncated.pth', whole.subarray(0, whole.length >> 1)), 'E_WEIGHTS_FORMAT', /truncated\.pth: not a valid PyTorch zip checkpoint/);
  });

  it('rejects a file that is not a zip', async () => {
    await rejects(write('text.pth', Buffer.from('not a checkpoint\n'.repeat(10))), 'E_WEIGHTS_FORMAT', /not a valid PyTorch zip checkpoint/);
  });

  it('rejects a zip without data.pkl', async () => {
    await rejects(write('other.zip', storedZip({ 'archive/readme.txt': Buffer.from('hi') })), 'E_WEIGHTS_FORMAT', /without <archive>\/data\.pkl/);
  });

  it('refuses a global outside the allow-list without running it', async () => {
    const file = checkpoint('evil.pth', pickle(call(global('os', 'system'), str('echo pwned'))));
    await rejects(file, 'E_WEIGHTS_FORMAT', /evil\.pth: data\.pkl names the global os\.system, which is not allowed/);
  });

  it('rejects a missing storage entry and a storage too short for the view', async () => {
    const body = pickle(dict([['w', tensor('FloatStorage', '0', 4, 2, [2, 2], [2, 1])]]));
    await rejects(checkpoint('missing.pth', body), 'E_WEIGHTS_FORMAT', /references storage 0, but the zip has no data\/0 entry/);
    await rejects(checkpoint('short.pth', body, { 0: f32(1, 2, 3, 4) }), 'E_WEIGHTS_FORMAT', /w \(size \[2,2\], stride \[2,1\], offset 2\) needs element 5 of storage data\/0, which has 4/);
  });

  it('rejects non-tensor values, big-endian storages and unsupported opcodes', async () => {
    await rejects(checkpoint('int.pth', pickle(dict([['w', int(3)]]))), 'E_WEIGHTS_FORMAT', /w is 3 of type number, expected a tensor/);
    await rejects(checkpoint('big.pth', pickle(dict([])), {}, { 'archive/byteorder': Buffer.from('big') }), 'E_WEIGHTS_FORMAT', /byteorder is "big"/);
    await rejects(checkpoint('proto0.pth', Buffer.from('(dp0\n.')), 'E_WEIGHTS_FORMAT', /opcode 0x64 \('d'\)/);
  });

  it('reports a missing file as E_IO', async () => {
    await rejects(path.join(dir, 'absent.pth'), 'E_IO', /absent\.pth/);
  });
});
