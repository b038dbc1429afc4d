// Forging PyTorch zip checkpoints: pickle opcodes for data.pkl and a zip writer (pth and fault tests).

// ---- A few pickle opcodes, enough to forge the data.pkl of small checkpoints. ----

export const op = (code: number, ...operand: number[]) => Buffer.from([code, ...operand]);
const u32 = (n: number) => { const b = Buffer.alloc(4); b.writeUInt32LE(n); return b; };
export const str = (s: string) => Buffer.concat([op(0x58), u32(Buffer.byteLength(s)), Buffer.from(s)]); // BINUNICODE
export const int = (n: number) => Buffer.concat([op(0x4a), u32(n)]); // BININT
export const tuple = (...items: Buffer[]) => Buffer.concat([op(0x28), ...items, op(0x74)]); // MARK ... TUPLE
export const global = (module: string, name: string) => Buffer.from(`c${module}\n${name}\n`);
export const call = (fn: Buffer, ...args: Buffer[]) => Buffer.concat([fn, tuple(...args), op(0x52)]); // REDUCE
export const dict = (entries: [string, Buffer][]) =>
  Buffer.concat([op(0x7d), op(0x28), ...entries.flatMap(([k, v]) => [str(k), v]), op(0x75)]); // EMPTY_DICT MARK ... SETITEMS
export const pickle = (body: Buffer) => Buffer.concat([op(0x80, 2), body, op(0x2e)]); // PROTO 2 ... STOP

/** What torch.save writes for one tensor: a view of storage `key` with `numel` elements. */
export function tensor(storageClass: string, key: string, numel: number, offset: number, size: number[], stride: number[]): Buffer {
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

/** An entry already deflated, with the size and CRC of what it inflates to. */
export interface Deflated { deflated: Uint8Array; size: number; crc: number }

export function storedZip(files: Record<string, Uint8Array | Deflated>): Buffer {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  for (const [name, entry] of Object.entries(files)) {
    const deflated = 'deflated' in entry;
    const data = deflated ? entry.deflated : entry;
    const nameBytes = Buffer.from(name);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4); // version needed to extract
    local.writeUInt16LE(deflated ? 8 : 0, 8); // method
    local.writeUInt32LE(deflated ? entry.crc : crc32(data), 14);
    local.writeUInt32LE(data.length, 18);
    local.writeUInt32LE(deflated ? entry.size : data.length, 22);
    local.writeUInt16LE(nameBytes.length, 26);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE(20, 4); // version made by
    central.writeUInt16LE(20, 6);
    local.copy(central, 10, 8, 10); // method
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

