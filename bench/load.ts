// A closed-loop HTTP load generator on undici for the admission bench: `connections` clients,
// each sending its next request as soon as it has the last answer, and, refused with a 503,
// waiting the Retry-After-Ms (else Retry-After) it was given first, as the README asks
// clients to. autocannon, used for the batching table, neither splits latencies by status nor
// honours Retry-After.
import { setMaxListeners } from 'node:events';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { Pool } from 'undici';

export interface LoadResult {
  /** Latencies (ms) of the 200 answers that came within the duration. */
  accepted: number[];
  /** Latencies (ms) of the 503 answers that came within the duration. */
  refused: number[];
  /** Other statuses and failed connections. */
  errors: number;
  seconds: number;
}

export interface LoadOptions {
  connections: number;
  durationS: number;
  /** Wait the Retry-After-Ms (else Retry-After) of a 503 before the next request (true), or send it at once. */
  honourRetryAfter: boolean;
}

/** POSTs `body` to `url` + `route` from `connections` clients for `durationS` seconds. */
export async function closedLoop(url: string, route: string, body: Buffer, { connections, durationS, honourRetryAfter }: LoadOptions): Promise<LoadResult> {
  const pool = new Pool(url, { connections, pipelining: 1 });
  const result: LoadResult = { accepted: [], refused: [], errors: 0, seconds: durationS };
  const t0 = performance.now();
  const end = t0 + durationS * 1000;
  const stop = new AbortController();
  // Every client's request and its Retry-After wait listen to it.
  setMaxListeners(2 * connections + 10, stop.signal);
  const sleep = (ms: number) => new Promise<void>((resolve) => {
    const done = () => {
      clearTimeout(timer);
      stop.signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    stop.signal.addEventListener('abort', done, { once: true });
  });
  const client = async () => {
    while (performance.now() < end) {
      const start = performance.now();
      try {
        const res = await pool.request({ path: route, method: 'POST', body, headers: { 'content-type': 'application/octet-stream' }, signal: stop.signal });
        await res.body.arrayBuffer();
        const done = performance.now();
        if (done > end) return;
        if (res.statusCode === 200) result.accepted.push(done - start);
        else if (res.statusCode === 503) {
          result.refused.push(done - start);
          const afterMs = Number(res.headers['retry-after-ms'] ?? Number(res.headers['retry-after']) * 1000);
          if (honourRetryAfter && afterMs > 0) await sleep(Math.min(afterMs, end - done));
        } else result.errors++;
      } catch {
        if (stop.signal.aborted) return;
        result.errors++;
      }
    }
  };
  const timer = setTimeout(() => stop.abort(), durationS * 1000);
  await Promise.all(Array.from({ length: connections }, client));
  clearTimeout(timer);
  // The requests still queued are dropped by the server as their clients go.
  await pool.destroy();
  return result;
}

/**
 * closedLoop on a worker thread: the clients' own work does not queue on the server's event
 * loop (they still share the cores, as clients on the same machine would).
 */
export function closedLoopInWorker(url: string, route: string, body: Buffer, options: LoadOptions): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(__filename, { workerData: { url, route, body, options } });
    worker.once('message', resolve);
    worker.once('error', reject);
  });
}

if (!isMainThread && workerData?.route) {
  const { url, route, body, options } = workerData as { url: string; route: string; body: Uint8Array; options: LoadOptions };
  void closedLoop(url, route, Buffer.from(body), options).then((result) => parentPort!.postMessage(result));
}

/** The p-th percentile (0-100) of `values`, NaN for none. */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}
