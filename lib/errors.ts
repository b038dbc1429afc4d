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
  | 'E_TIMEOUT'; // a request took longer than the server's limit

export class VggError extends Error {
  readonly code: VggErrorCode;
  constructor(code: VggErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'VggError';
    this.code = code;
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
