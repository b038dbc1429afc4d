import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { VggError, type VggErrorCode } from '../errors';
import { convertKeras } from './keras';
import type { Converted } from './layers';

// HDF5 (h5wasm) reads synchronously: a VGG16 file is seconds of reading and converting. It runs
// on one worker thread per process, started on first use and unref'd (it never keeps the
// process alive), which hands the converted tensors back by transfer, not by copy: the event
// loop stays free and memory holds one copy of the weights.

type Request = { id: number; file: string; fileSize: number };
type Reply = { id: number } & (
  | { ok: true; tensors: [string, { data: Float32Array; shape: number[] }][]; metadata: Record<string, string>; container: string }
  | { ok: false; code?: VggErrorCode; message: string });

let worker: Worker | undefined;
let nextId = 0;
const waiting = new Map<number, { resolve: (c: Converted) => void; reject: (e: unknown) => void; file: string }>();

function reader(): Worker {
  if (worker) return worker;
  const w = new Worker(__filename, { workerData: { kerasReader: true } });
  w.unref();
  w.on('message', (reply: Reply) => {
    const caller = waiting.get(reply.id);
    if (!caller) return;
    waiting.delete(reply.id);
    if (waiting.size === 0) w.unref();
    if (reply.ok) caller.resolve({ tensors: new Map(reply.tensors), metadata: reply.metadata, container: reply.container });
    else caller.reject(new VggError(reply.code ?? 'E_WEIGHTS_FORMAT', reply.code ? reply.message : `${caller.file} (Keras HDF5): ${reply.message}`));
  });
  const failAll = (why: string) => {
    worker = undefined;
    for (const [, caller] of waiting) caller.reject(new VggError('E_WEIGHTS_FORMAT', `${caller.file} (Keras HDF5): the reader thread ${why}`));
    waiting.clear();
  };
  w.on('error', (e) => failAll(`failed: ${e.message}`));
  w.on('exit', (code) => failAll(`exited (${code})`));
  worker = w;
  return w;
}

/** convertKeras on the reader thread. */
export function convertKerasOffThread(file: string, fileSize: number): Promise<Converted> {
  return new Promise((resolve, reject) => {
    const id = nextId++;
    waiting.set(id, { resolve, reject, file });
    const w = reader();
    w.ref(); // while a caller waits, the process waits for its answer
    w.postMessage({ id, file, fileSize } satisfies Request);
  });
}

if (!isMainThread && workerData?.kerasReader) {
  parentPort!.on('message', ({ id, file, fileSize }: Request) => {
    convertKeras(file, fileSize).then((c) => {
      const tensors = [...c.tensors];
      const buffers = [...new Set(tensors.map(([, t]) => t.data.buffer as ArrayBuffer))];
      parentPort!.postMessage({ id, ok: true, tensors, metadata: c.metadata, container: c.container } satisfies Reply, buffers);
    }, (e: unknown) => {
      parentPort!.postMessage({ id, ok: false, code: e instanceof VggError ? e.code : undefined, message: (e as Error)?.message ?? String(e) } satisfies Reply);
    });
  });
}
