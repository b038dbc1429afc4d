import * as fs from 'node:fs';
import * as path from 'node:path';
import { VggError, type VggErrorCode } from './errors';

/** Small writes are gathered into one write syscall per this many bytes. */
const BUFFER_BYTES = 1 << 20;

/** A file written front to back, with small pieces buffered; sync, as the writers run once at the end of a job. */
export class Sink {
  #fd: number;
  #pieces: Uint8Array[] = [];
  #buffered = 0;

  constructor(fd: number) {
    this.#fd = fd;
  }

  write(piece: Uint8Array | string): void {
    const bytes = typeof piece === 'string' ? Buffer.from(piece) : piece;
    this.#pieces.push(bytes);
    this.#buffered += bytes.length;
    if (this.#buffered >= BUFFER_BYTES) this.flush();
  }

  flush(): void {
    const pieces = this.#pieces;
    this.#pieces = [];
    this.#buffered = 0;
    writeAll(this.#fd, pieces);
  }
}

/**
 * Writes every byte of `pieces`. writev may take fewer bytes than asked (a disk filling up takes
 * what fits, then says ENOSPC on the next call): the rest is written again until all of it is in,
 * or a call takes nothing, which is a full disk however the kernel put it.
 */
function writeAll(fd: number, pieces: Uint8Array[]): void {
  let left = pieces.filter((p) => p.length > 0);
  while (left.length) {
    const wrote = fs.writevSync(fd, left);
    if (wrote === 0) throw Object.assign(new Error('no space left on device (a write took 0 bytes)'), { code: 'ENOSPC' });
    left = skipBytes(left, wrote);
  }
}

function skipBytes(pieces: Uint8Array[], bytes: number): Uint8Array[] {
  let i = 0;
  while (i < pieces.length && bytes >= pieces[i].length) bytes -= pieces[i++].length;
  const rest = pieces.slice(i);
  if (bytes > 0) rest[0] = rest[0].subarray(bytes);
  return rest;
}

/**
 * Writes `file` through `write` in place and flushes it to the disk (fsync) before returning: for
 * a file that something written after it vouches for, such as a journal chunk's data. A failure
 * is E_IO naming `shownAs` (`file` by default); a VggError thrown by `write` passes through.
 */
export function writeDurably(file: string, write: (out: Sink) => void, shownAs = file): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(file, 'w');
    const out = new Sink(fd);
    write(out);
    out.flush();
    fs.fsyncSync(fd);
  } catch (e) {
    throw ioError(e, `cannot write ${shownAs}`);
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

/**
 * Writes `file` through `write` under a temporary name in the same folder, flushed to the disk
 * (writeDurably), then renamed over `file`: a reader (or a later --resume) sees the old file or
 * the whole new one, never half of one. On failure the temporary file is deleted.
 */
export function writeAtomic(file: string, write: (out: Sink) => void): void {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  try {
    writeDurably(tmp, write, file);
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw ioError(e, `cannot write ${file}`);
  }
}

/**
 * A file written piece by piece over a long run, atomically as writeAtomic's: pieces go to a
 * temporary file in the same folder; commit() flushes it to the disk and renames it over the
 * file, abort() deletes it. Opening fails at once (E_IO) where the folder is not writable.
 */
export class AtomicWriter {
  readonly file: string;
  #tmp: string;
  #fd: number | undefined;
  #out: Sink;

  constructor(file: string) {
    this.file = file;
    this.#tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
    try {
      this.#fd = fs.openSync(this.#tmp, 'w');
    } catch (e) {
      throw ioError(e, `cannot write ${file}`);
    }
    this.#out = new Sink(this.#fd);
  }

  write(piece: string): void {
    try {
      this.#out.write(piece);
    } catch (e) {
      this.abort();
      throw ioError(e, `cannot write ${this.file}`);
    }
  }

  commit(): void {
    try {
      this.#out.flush();
      fs.fsyncSync(this.#fd!);
      fs.closeSync(this.#fd!);
      this.#fd = undefined;
      fs.renameSync(this.#tmp, this.file);
    } catch (e) {
      this.abort();
      throw ioError(e, `cannot write ${this.file}`);
    }
  }

  /** Deletes the temporary file; the file itself is left as it was. */
  abort(): void {
    if (this.#fd !== undefined) fs.closeSync(this.#fd);
    this.#fd = undefined;
    fs.rmSync(this.#tmp, { force: true });
  }
}

/** A file-system failure as E_IO; a VggError (a bad row found while writing) passes through. */
export function ioError(e: unknown, what: string): VggError {
  if (e instanceof VggError) return e;
  // The errno code rather than the message, which would name the temporary file.
  return new VggError('E_IO', `${what}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { cause: e });
}

/**
 * writeDurably off the event loop: `pieces` written in order, every byte checked (a short
 * write is an error, not a success), then fsync. For the journal, which commits while inference runs.
 */
export async function writeDurablyAsync(file: string, pieces: Iterable<Uint8Array>, shownAs = file): Promise<void> {
  let handle: fs.promises.FileHandle | undefined;
  try {
    handle = await fs.promises.open(file, 'w');
    for (const piece of pieces) await writeAllAsync(handle, piece);
    await handle.sync();
  } catch (e) {
    throw ioError(e, `cannot write ${shownAs}`);
  } finally {
    await handle?.close();
  }
}

/**
 * Every byte of `data`, at `position` (or the file's own position): a write that takes less (a
 * disk filling up) is continued, and one that takes nothing is ENOSPC, however the kernel put it.
 */
export async function writeAllAsync(handle: fs.promises.FileHandle, data: Uint8Array, position: number | null = null): Promise<void> {
  for (let at = 0; at < data.byteLength;) {
    const { bytesWritten } = await handle.write(data, at, data.byteLength - at, position === null ? null : position + at);
    if (bytesWritten <= 0) throw Object.assign(new Error(`no space left on device (wrote ${at} of ${data.byteLength} bytes)`), { code: 'ENOSPC' });
    at += bytesWritten;
  }
}

/** writeAtomic off the event loop: a temporary file written durably, then renamed over `file`. */
export async function writeAtomicAsync(file: string, pieces: Iterable<Uint8Array>): Promise<void> {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  try {
    await writeDurablyAsync(tmp, pieces, file);
    await fs.promises.rename(tmp, file);
  } catch (e) {
    await fs.promises.rm(tmp, { force: true });
    throw ioError(e, `cannot write ${file}`);
  }
}

/**
 * Reads the whole of `file`, which must be a regular file of at most `maxBytes`: a FIFO, a device
 * or a socket (`--input /dev/zero`) would block or never end. Opened non-blocking, so that a FIFO
 * without a writer is refused rather than waited on. Failures are E_IO naming `what` and the file.
 */
export function readRegularFile(file: string, what: string, maxBytes: number): Buffer {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch (e) {
    throw ioError(e, `cannot read ${what} ${file}`);
  }
  try {
    const stat = fs.fstatSync(fd);
    if (!stat.isFile()) throw new VggError('E_IO', `${what} ${file} is not a regular file (${fileKind(stat)})`);
    if (stat.size > maxBytes) throw new VggError('E_IO', `${what} ${file} is ${stat.size} bytes, more than the ${maxBytes} it may be`);
    return fs.readFileSync(fd);
  } catch (e) {
    throw ioError(e, `cannot read ${what} ${file}`);
  } finally {
    fs.closeSync(fd);
  }
}

/** Stats `file` and refuses what is not a regular file (`code` as the caller's errors are), without opening it. */
export async function checkRegularFile(file: string, what: string, code: VggErrorCode = 'E_IO'): Promise<fs.Stats> {
  let stat: fs.Stats;
  try {
    stat = await fs.promises.stat(file);
  } catch (e) {
    throw ioError(e, `cannot read ${what} ${file}`);
  }
  if (!stat.isFile()) throw new VggError(code, `${what} ${file} is not a regular file (${fileKind(stat)})`);
  return stat;
}

function fileKind(stat: fs.Stats): string {
  if (stat.isDirectory()) return 'a folder';
  if (stat.isFIFO()) return 'a FIFO';
  if (stat.isCharacterDevice() || stat.isBlockDevice()) return 'a device';
  if (stat.isSocket()) return 'a socket';
  return 'not a file';
}
