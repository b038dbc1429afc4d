/** Stable error codes: callers branch on `code`, people read `message`. */
export type VggErrorCode =
  | 'E_ARG' // a bad argument or option
  | 'E_SHAPE' // a tensor whose shape does not fit the network
  | 'E_WEIGHTS_FORMAT' // a weights file that is not a valid safetensors / .pth file
  | 'E_WEIGHTS_MISSING' // a tensor the network needs is absent
  | 'E_WEIGHTS_EXTRA' // a tensor the network does not know
  | 'E_WEIGHTS_FOREIGN' // a packed file made by another oneDNN version or for another instruction set
  | 'E_IO' // the file system said no
  | 'E_DISPOSED' // the model was disposed
  | 'E_BACKEND' // the native backend failed
  | 'E_IMAGE' // an image that cannot be decoded, or too large to try
  | 'E_FETCH' // a download failed: the network, the server's answer or the file's checksum
  | 'E_BUSY' // the server's queue is full, or it is shutting down: retry later
  | 'E_TIMEOUT' // a request took longer than the server's limit
  | 'E_MISSING_DEPENDENCY' // an optional peer dependency (fastify, bullmq, ...) that the app has not installed
  | 'E_JOB_LOST'; // Redis no longer knows a job (restarted without persistence): submit it again

export class VggError extends Error {
  readonly code: VggErrorCode;
  /** E_BUSY: how long from now a retry is expected to be accepted, where the server can tell (its Retry-After). */
  readonly retryAfterMs?: number;
  constructor(code: VggErrorCode, message: string, options?: { cause?: unknown; retryAfterMs?: number }) {
    super(message, options);
    this.name = 'VggError';
    this.code = code;
    if (options?.retryAfterMs !== undefined) this.retryAfterMs = options.retryAfterMs;
  }
}

/** Describes a received value for messages like sharp's: "-3 of type number". */
export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return `an array of length ${value.length}`;
  if (ArrayBuffer.isView(value)) return `a ${value.constructor.name} of length ${(value as unknown as { length: number }).length}`;
  if (typeof value === 'string') return `${JSON.stringify(value.length > 60 ? value.slice(0, 60) + '…' : value)} of type string`;
  if (typeof value === 'object') return `an object`;
  return `${String(value)} of type ${typeof value}`;
}

export function argError(name: string, expected: string, value: unknown): VggError {
  return new VggError('E_ARG', `Expected ${expected} for ${name} but received ${describe(value)}`);
}

/** An options object with no keys but `allowed`; each key's value is checked by the caller. */
export function checkOptions<T extends object>(options: T | undefined, name: string, allowed: (keyof T)[]): Partial<T> {
  if (options === undefined) return {};
  if (typeof options !== 'object' || options === null || Array.isArray(options)) throw argError(name, 'an object', options);
  for (const key of Object.keys(options)) {
    if (!allowed.includes(key as keyof T)) throw new VggError('E_ARG', `Unknown option ${name}.${key}; expected one of ${allowed.join(', ')}`);
  }
  return options;
}

/** Whether `value` is a safe integer of at least `min` (1 by default): for checks of many values at once. */
export const isInt = (value: unknown, min = 1): value is number => Number.isSafeInteger(value) && (value as number) >= min;

/** An integer from `min` (1 by default) to `max`, or E_ARG naming `name`. */
export function checkInt(value: unknown, name: string, { min = 1, max = Number.MAX_SAFE_INTEGER }: { min?: number; max?: number } = {}): number {
  if (!isInt(value, min) || value > max) {
    const range = max === Number.MAX_SAFE_INTEGER ? (min === 1 ? 'a positive integer' : `an integer of at least ${min}`) : `an integer from ${min} to ${max}`;
    throw argError(name, range, value);
  }
  return value as number;
}

/** One of `choices`, or E_ARG naming `name` and listing them. */
export function checkOneOf<T>(value: unknown, name: string, choices: readonly T[]): T {
  if (!choices.includes(value as T)) throw argError(name, `one of ${choices.join(', ')}`, value);
  return value as T;
}

/** A boolean, or E_ARG naming `name`. */
export function checkBoolean(value: unknown, name: string): boolean {
  if (typeof value !== 'boolean') throw argError(name, 'a boolean', value);
  return value;
}

/**
 * The optional peer dependencies, by the part of vggnet that needs them, each with what to
 * install (inside package.json's peer range): an app that only extracts features installs
 * none of them, and vggnet loads them on first use. They are the app's own, so that vggnetPlugin
 * registers in the app's fastify with the multipart plugin of the same fastify major.
 */
const PEERS: Record<PeerFeature, { what: string; packages: Record<string, () => string> }> = {
  serve: {
    what: 'the HTTP service (vgg serve, createServer, vggnetPlugin)',
    packages: {
      'fastify': () => 'fastify@5',
      '@fastify/multipart': () => (fastifyMajor() === 4 ? '@fastify/multipart@8' : '@fastify/multipart@10'),
      'prom-client': () => 'prom-client@15',
    },
  },
  jobs: {
    what: 'jobs on Redis (vgg job, submitJob, runWorker, jobStatus, mergeJob)',
    packages: { bullmq: () => 'bullmq@5' },
  },
};

export type PeerFeature = 'serve' | 'jobs';

/** Throws E_MISSING_DEPENDENCY naming every package of `feature` the app lacks, with the command that adds them. */
export function checkPeers(feature: PeerFeature): void {
  const { what, packages } = PEERS[feature];
  const missing = Object.keys(packages).filter((name) => !resolvable(name));
  if (missing.length === 0) return;
  const install = missing.map((name) => packages[name]()).join(' ');
  throw new VggError('E_MISSING_DEPENDENCY', `${what} needs ${missing.join(' and ')} (optional peer dependencies of vggnet): npm install ${install}`);
}

function resolvable(name: string): boolean {
  try {
    require.resolve(name);
    return true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'MODULE_NOT_FOUND') return false;
    throw e;
  }
}

/** The major version of the app's fastify; undefined when it has none (or hides its package.json). */
function fastifyMajor(): number | undefined {
  try {
    return Number((require('fastify/package.json') as { version: string }).version.split('.')[0]);
  } catch {
    return undefined;
  }
}
