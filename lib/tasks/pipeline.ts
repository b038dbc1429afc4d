// The decode-ahead pipeline's two stages, generic over what flows through them: extract uses
// them for decoding and inference; anything else that streams images through a model can too.

/**
 * Consecutive items in arrays of `size` (the last one may be shorter). When `items` fails, the
 * items it gave before are still a (short) batch, and the failure comes after it.
 */
export async function* batches<T>(items: AsyncIterable<T>, size: number): AsyncGenerator<T[]> {
  let batch: T[] = [];
  let failure: { error: unknown } | undefined;
  try {
    for await (const item of items) {
      batch.push(item);
      if (batch.length === size) {
        yield batch;
        batch = [];
      }
    }
  } catch (error) {
    failure = { error };
  }
  if (batch.length) yield batch;
  if (failure) throw failure.error;
}

type Settled<R> = { ok: true; value: R } | { ok: false; error: unknown };

/**
 * `fn` of every item, in input order, with up to `ahead` calls started before their results are
 * wanted. At most `ahead` results are held: an item is pulled only when one is taken, which is the
 * backpressure that keeps every stage bounded. A rejection is rethrown at its item's position; a
 * failure of `items` itself after the results of the items it gave before, which it does not cancel.
 */
export async function* mapAhead<T, R>(items: AsyncIterable<T>, ahead: number, fn: (item: T) => Promise<R>): AsyncGenerator<R> {
  const source = items[Symbol.asyncIterator]();
  // Settled, so that calls still running when the consumer stops cannot become unhandled rejections.
  const queue: Promise<Settled<R>>[] = [];
  let exhausted = false;
  let failure: { error: unknown } | undefined;
  try {
    for (;;) {
      while (!exhausted && queue.length < ahead) {
        let next: IteratorResult<T>;
        try {
          next = await source.next();
        } catch (error) {
          // Held until the results already queued are out: they do not depend on what failed.
          exhausted = true; // a failed iterator is finished: nothing to return()
          failure = { error };
          break;
        }
        if (next.done) exhausted = true;
        else queue.push(fn(next.value).then((value) => ({ ok: true, value }), (error: unknown) => ({ ok: false, error })));
      }
      const head = queue.shift();
      if (!head) {
        if (failure) throw failure.error;
        return;
      }
      const result = await head;
      if (!result.ok) throw result.error;
      yield result.value;
    }
  } finally {
    if (!exhausted) await source.return?.();
  }
}
