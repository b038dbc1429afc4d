import { VggError } from '../errors';

/**
 * The part of Python's pickle protocol that `torch.save(state_dict)` writes (protocol 2 binary
 * opcodes, plus the FRAME / MEMOIZE / STACK_GLOBAL / BINUNICODE8 of protocol 4), as a stack machine.
 *
 * Nothing is ever executed: GLOBAL / STACK_GLOBAL may only name entries of the caller's
 * `globals` table, and REDUCE / NEWOBJ may only call functions that came from that table.
 * Dicts become `Map`s (insertion order is the state_dict's order), lists and tuples become
 * arrays, ints become numbers (bigint past 2^53), None becomes null.
 */
export interface UnpickleOptions {
  /** Prefix of every error message, e.g. "D.pth: data.pkl". */
  label: string;
  /** What each allowed "module.name" global stands for; functions may be called by REDUCE. */
  globals: ReadonlyMap<string, unknown>;
  /** Turns a BINPERSID id (in PyTorch, a storage reference) into a value. */
  persistentLoad: (pid: unknown) => unknown;
}

/** Opcode byte -> name, for every opcode this machine runs (and for error messages). */
const OPCODES = {
  0x80: 'PROTO', 0x95: 'FRAME', 0x7d: 'EMPTY_DICT', 0x5d: 'EMPTY_LIST', 0x29: 'EMPTY_TUPLE',
  0x28: 'MARK', 0x58: 'BINUNICODE', 0x8c: 'SHORT_BINUNICODE', 0x8d: 'BINUNICODE8',
  0x71: 'BINPUT', 0x72: 'LONG_BINPUT', 0x68: 'BINGET', 0x6a: 'LONG_BINGET', 0x94: 'MEMOIZE',
  0x4a: 'BININT', 0x4b: 'BININT1', 0x4d: 'BININT2', 0x8a: 'LONG1', 0x47: 'BINFLOAT',
  0x4e: 'NONE', 0x88: 'NEWTRUE', 0x89: 'NEWFALSE', 0x74: 'TUPLE', 0x85: 'TUPLE1',
  0x86: 'TUPLE2', 0x87: 'TUPLE3', 0x63: 'GLOBAL', 0x93: 'STACK_GLOBAL', 0x52: 'REDUCE',
  0x62: 'BUILD', 0x73: 'SETITEM', 0x75: 'SETITEMS', 0x65: 'APPENDS', 0x61: 'APPEND',
  0x51: 'BINPERSID', 0x81: 'NEWOBJ', 0x2e: 'STOP',
} as const satisfies Record<number, string>;
type OpName = (typeof OPCODES)[keyof typeof OPCODES];

const HIGHEST_PROTOCOL = 5;
const UTF8 = new TextDecoder('utf-8', { fatal: true });

/** Runs `bytes` to its STOP opcode and returns the value it leaves. */
export function unpickle(bytes: Uint8Array, options: UnpickleOptions): unknown {
  return new Machine(bytes, options).run();
}

class Machine {
  private pos = 0;
  /** Start of the opcode being run, for error messages. */
  private opAt = 0;
  private op: OpName = 'PROTO';
  private readonly stack: unknown[] = [];
  /** Stack heights at each open MARK. */
  private readonly marks: number[] = [];
  private readonly memo = new Map<number, unknown>();

  constructor(private readonly bytes: Uint8Array, private readonly options: UnpickleOptions) {}

  run(): unknown {
    // Every opcode consumes at least one byte, so this ends within bytes.length steps.
    while (this.pos < this.bytes.length) {
      this.opAt = this.pos;
      const code = this.bytes[this.pos++];
      const name = (OPCODES as Record<number, OpName | undefined>)[code];
      if (!name) {
        const shown = code >= 0x20 && code < 0x7f ? ` ('${String.fromCharCode(code)}')` : '';
        throw this.fail(`uses pickle opcode 0x${code.toString(16).padStart(2, '0')}${shown}, ` +
          'which torch.save does not write for a state_dict; expected protocol-2 binary opcodes only');
      }
      this.op = name;
      if (name === 'STOP') return this.pop();
      this.step(name);
    }
    throw this.fail('ends without a STOP opcode (truncated?)', this.bytes.length);
  }

  private step(op: Exclude<OpName, 'STOP'>): void {
    switch (op) {
      case 'PROTO': {
        const version = this.u8();
        if (version > HIGHEST_PROTOCOL) throw this.fail(`is pickle protocol ${version}, expected at most ${HIGHEST_PROTOCOL}`);
        return;
      }
      case 'FRAME': this.take(8); return; // framing only batches reads; the content follows inline
      case 'EMPTY_DICT': this.stack.push(new Map()); return;
      case 'EMPTY_LIST': case 'EMPTY_TUPLE': this.stack.push([]); return;
      case 'MARK': this.marks.push(this.stack.length); return;
      case 'BINUNICODE': this.stack.push(this.text(this.u32())); return;
      case 'SHORT_BINUNICODE': this.stack.push(this.text(this.u8())); return;
      case 'BINUNICODE8': this.stack.push(this.text(this.u64())); return;
      case 'BINPUT': this.memo.set(this.u8(), this.top()); return;
      case 'LONG_BINPUT': this.memo.set(this.u32(), this.top()); return;
      case 'MEMOIZE': this.memo.set(this.memo.size, this.top()); return;
      case 'BINGET': this.stack.push(this.recall(this.u8())); return;
      case 'LONG_BINGET': this.stack.push(this.recall(this.u32())); return;
      case 'BININT': this.stack.push(this.take(4).getInt32(0, true)); return;
      case 'BININT1': this.stack.push(this.u8()); return;
      case 'BININT2': this.stack.push(this.take(2).getUint16(0, true)); return;
      case 'LONG1': this.stack.push(this.long(this.u8())); return;
      case 'BINFLOAT': this.stack.push(this.take(8).getFloat64(0, false)); return;
      case 'NONE': this.stack.push(null); return;
      case 'NEWTRUE': this.stack.push(true); return;
      case 'NEWFALSE': this.stack.push(false); return;
      case 'TUPLE': this.stack.push(this.popMark()); return;
      case 'TUPLE1': this.stack.push(this.popN(1)); return;
      case 'TUPLE2': this.stack.push(this.popN(2)); return;
      case 'TUPLE3': this.stack.push(this.popN(3)); return;
      case 'GLOBAL': {
        const module = this.line();
        this.stack.push(this.global(module, this.line()));
        return;
      }
      case 'STACK_GLOBAL': {
        const [module, name] = this.popN(2);
        if (typeof module !== 'string' || typeof name !== 'string') throw this.fail('has a STACK_GLOBAL whose module and name are not strings');
        this.stack.push(this.global(module, name));
        return;
      }
      case 'REDUCE': case 'NEWOBJ': {
        const [fn, args] = this.popN(2);
        if (typeof fn !== 'function') throw this.fail(`calls something that is not an allowed global (${typeof fn})`);
        if (!Array.isArray(args)) throw this.fail('calls a global with arguments that are not a tuple');
        this.stack.push(fn(args));
        return;
      }
      case 'BUILD': {
        const state = this.pop();
        // Only dicts get BUILD in a state_dict: an OrderedDict's attributes (its `_metadata`
        // of module versions), which loading tensors does not need.
        if (!(this.top() instanceof Map) || !(state === null || state instanceof Map)) {
          throw this.fail('sets the state of an object that is not a dict, which a state_dict does not do');
        }
        return;
      }
      case 'SETITEM': this.setItems(this.popN(2)); return;
      case 'SETITEMS': this.setItems(this.popMark()); return;
      case 'APPEND': this.append(this.popN(1)); return;
      case 'APPENDS': this.append(this.popMark()); return;
      case 'BINPERSID': this.stack.push(this.options.persistentLoad(this.pop())); return;
    }
  }

  private fail(why: string, at = this.opAt): VggError {
    return new VggError('E_WEIGHTS_FORMAT', `${this.options.label} ${why} (${this.op} at byte ${at})`);
  }

  /** The next `n` bytes as a DataView, or an error if the data ends first. */
  private take(n: number): DataView {
    if (n > this.bytes.length - this.pos) throw this.fail(`ends inside a ${this.op} operand (truncated?)`, this.bytes.length);
    const view = new DataView(this.bytes.buffer, this.bytes.byteOffset + this.pos, n);
    this.pos += n;
    return view;
  }

  private u8(): number { return this.take(1).getUint8(0); }
  private u32(): number { return this.take(4).getUint32(0, true); }

  private u64(): number {
    const n = this.take(8).getBigUint64(0, true);
    return n > BigInt(Number.MAX_SAFE_INTEGER) ? Infinity : Number(n); // Infinity fails take()'s bound
  }

  private text(length: number): string {
    const raw = this.take(length);
    try {
      return UTF8.decode(raw);
    } catch {
      throw this.fail('has a string that is not valid UTF-8');
    }
  }

  /** A GLOBAL operand: text up to a newline, which this consumes. */
  private line(): string {
    const end = this.bytes.indexOf(0x0a, this.pos);
    if (end < 0) throw this.fail('ends inside a GLOBAL operand (truncated?)', this.bytes.length);
    const text = this.text(end - this.pos);
    this.pos++; // the newline
    return text;
  }

  /** Little-endian two's complement of `n` bytes. */
  private long(n: number): number | bigint {
    const raw = this.take(n);
    let value = 0n;
    for (let i = n - 1; i >= 0; i--) value = (value << 8n) | BigInt(raw.getUint8(i));
    if (n > 0 && raw.getUint8(n - 1) & 0x80) value -= 1n << BigInt(8 * n);
    return value >= BigInt(Number.MIN_SAFE_INTEGER) && value <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(value) : value;
  }

  private global(module: string, name: string): unknown {
    const key = `${module}.${name}`;
    if (!this.options.globals.has(key)) {
      throw this.fail(`names the global ${key}, which is not allowed; expected one of ${[...this.options.globals.keys()].join(', ')}`);
    }
    return this.options.globals.get(key);
  }

  private recall(index: number): unknown {
    if (!this.memo.has(index)) throw this.fail(`reads memo slot ${index}, which was never written`);
    return this.memo.get(index);
  }

  private top(): unknown {
    if (this.stack.length === 0 || this.stack.length === this.marks.at(-1)) throw this.fail('reads from an empty stack');
    return this.stack[this.stack.length - 1];
  }

  private pop(): unknown {
    this.top();
    return this.stack.pop();
  }

  private popN(n: number): unknown[] {
    if (this.stack.length - (this.marks.at(-1) ?? 0) < n) throw this.fail(`needs ${n} stack items`);
    return this.stack.splice(this.stack.length - n, n);
  }

  /** The items pushed since the last MARK, which is consumed. */
  private popMark(): unknown[] {
    const at = this.marks.pop();
    if (at === undefined) throw this.fail('has no MARK to pop to');
    return this.stack.splice(at);
  }

  private setItems(items: unknown[]): void {
    const dict = this.top();
    if (!(dict instanceof Map)) throw this.fail('sets items on something that is not a dict');
    if (items.length % 2) throw this.fail('has an odd number of items for a dict');
    for (let i = 0; i < items.length; i += 2) dict.set(items[i], items[i + 1]);
  }

  private append(items: unknown[]): void {
    const list = this.top();
    if (!Array.isArray(list)) throw this.fail('appends to something that is not a list');
    for (const item of items) list.push(item);
  }
}
