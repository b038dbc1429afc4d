import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { VggError } from '../lib/errors';
import { readPth } from '../lib/weights/pth';
import { parseSafetensors, readF32 } from '../lib/weights/safetensors';
import { fixture } from './helpers';


// ---- A few pickle opcodes, enough to forge the data.pkl of small checkpoints. ----

const op = (code: number, ...operand: number[]) => Buffer.from([code, ...operand]);
const u32 = (n: number) => { const b = Buffer.alloc(4); b.writeUInt32LE(n); return b; };
const str = (s: string) => Buffer.concat([op(0x58), u32(Buffer.byteLength(s)), Buffer.from(s)]); // BINUNICODE
const int = (n: number) => Buffer.concat([op(0x4a), u32(n)]); // BININT
const tuple = (...items: Buffer[]) => Buffer.concat([op(0x28), ...items, op(0x74)]); // MARK ... TUPLE
const global = (module: string, name: string) => Buffer.from(`c${module}\n${name}\n`);
const call = (fn: Buffer, ...args: Buffer[]) => Buffer.concat([fn, tuple(...args), op(0x52)]); // REDUCE
const dict = (entries: [string, Buffer][]) =>
  Buffer.concat([op(0x7d), op(0x28), ...entries.flatMap(([k, v]) => [str(k), v]), op(0x75)]); // EMPTY_DICT MARK ... SETITEMS
const pickle = (body: Buffer) => Buffer.concat([op(0x80, 2), body, op(0x2e)]); // PROTO 2 ... STOP

/** What torch.save writes for one tensor: a view of storage `key` with `numel` elements. */
function tensor(storageClass: string, key: string, numel: number, offset: number, size: number[], stride: number[]): Buffer {
  const storage = Buffer.concat([tuple(str('storage'), global('torch', storageClass), str(key), str('cpu'), int(numel)), op(0x51)]); // BINPERSID
  return call(global('torch._utils', '_rebuild_tensor_v2'),
    storage, int(offset), tuple(...size.map(int)), tuple(...stride.map(int)), op(0x89), call(global('collections', 'OrderedDict')));
}

// ---- A zip writer for stored (uncompressed) entries, as torch.save writes them. ----

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  for (let k = 0; k < 8; k++) n = n & 1 ? 0xedb88320 ^ (n >>> 1) : n >>> 1;
  return n >>> 0;
});
const crc32 = (data: Uint8Array) => (data.reduce((c, b) => CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8), 0xffffffff) ^ 0xffffffff) >>> 0;

function storedZip(files: Record<string, Uint8Array>): Buffer {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  for (const [name, data] of Object.entries(files)) {
    const nameBytes = Buffer.from(name);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4); // version needed to extract
    local.writeUInt32LE(crc32(data), 14);
    local.writeUInt32LE(data.length, 18);
    local.writeUInt32LE(data.length, 22);
    local.writeUInt16LE(nameBytes.length, 26);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE(20, 4); // version made by
    central.writeUInt16LE(20, 6);
    local.copy(central, 16, 14, 26); // crc and sizes
    central.writeUInt16LE(nameBytes.length, 28);
    central.writeUInt32LE(offset, 42);
    locals.push(local, nameBytes, Buffer.from(data));
    centrals.push(central, nameBytes);
    offset += local.length + nameBytes.length + data.length;
  }
  const directory = Buffer.concat(centrals);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(centrals.length / 2, 8);
  end.writeUInt16LE(centrals.length / 2, 10);
  end.writeUInt32LE(directory.length, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, directory, end]);
}

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
