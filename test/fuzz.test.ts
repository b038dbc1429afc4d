// Corrupted weights files: whatever the bytes, loadModel ends in a VggError or in a model that
// runs. Never another exception type, never a crash. Reproducible: FUZZ_SEED=<n> repeats a run.
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import { VggError } from '../lib/errors';
import { loadModel } from '../lib/model';
import { fixture, prng, randomInput, writeTemp } from './helpers';

const SEED = process.env.FUZZ_SEED !== undefined ? Number(process.env.FUZZ_SEED) : 20240611;
const ORIGINAL = fs.readFileSync(fixture('A.weights.safetensors'));
const HEADER_END = 8 + Number(ORIGINAL.readBigUInt64LE(0));
const INPUT = randomInput(1, 32, 32, 7);
/** Bytes that keep JSON plausible, so flips reach past the parser into the checks behind it. */
const JSONISH = Buffer.from('0123456789",:[]{} -.eEMLF');

interface Outcome { codes: Map<string, number>; loaded: number; ran: number }

/** Loads `bytes`; asserts the result is a VggError or a model that runs (then disposes it). */
async function attempt(bytes: Uint8Array, what: string, outcome: Outcome, finite: boolean): Promise<void> {
  const file = writeTemp(bytes, 'fuzz.safetensors');
  let model;
  try {
    model = await loadModel(file, { threads: 1 });
  } catch (e) {
    assert.ok(e instanceof VggError, `${what}: loadModel threw ${e instanceof Error ? `${e.constructor.name}: ${e.message}` : String(e)}, not a VggError`);
    assert.ok(e.message.includes(file), `${what}: "${e.message}" does not name the file`);
    outcome.codes.set(e.code, (outcome.codes.get(e.code) ?? 0) + 1);
    return;
  }
  outcome.loaded++;
  try {
    const out = await model.run(INPUT, { outputs: ['prob'] });
    assert.deepEqual(out.prob.shape, [1, model.info.classes], what);
    if (finite) {
      const sum = out.prob.data.reduce((a, b) => a + b, 0);
      assert.ok(Math.abs(sum - 1) < 1e-4, `${what}: prob sums to ${sum}`);
    }
    outcome.ran++;
  } catch (e) {
    // A valid but different architecture may not accept 32x32; that must still be a VggError.
    assert.ok(e instanceof VggError, `${what}: run threw ${e instanceof Error ? `${e.constructor.name}: ${e.message}` : String(e)}, not a VggError`);
  } finally {
    await model.dispose();
  }
}

/** Flips 1-4 bytes at positions `pick()` chooses; returns the bytes and a description. */
function mutate(rand: () => number, pick: () => number): [Buffer, string] {
  const bytes = Buffer.from(ORIGINAL);
  const count = 1 + Math.floor(rand() * 4);
  const edits: string[] = [];
  for (let k = 0; k < count; k++) {
    const at = pick();
    const value = rand() < 0.5 ? JSONISH[Math.floor(rand() * JSONISH.length)] : Math.floor(rand() * 256);
    edits.push(`[${at}] ${bytes[at]}->${value}`);
    bytes[at] = value;
  }
  return [bytes, edits.join(', ')];
}

const summary = (o: Outcome) => `${o.loaded} loaded (${o.ran} ran), errors ${JSON.stringify(Object.fromEntries(o.codes))}`;

describe('fuzzed weights files', function () {
  this.timeout(60_000);
  before(() => console.log(`      fuzz seed ${SEED} (set FUZZ_SEED to repeat)`));

  it('500 headers with 1-4 flipped bytes: VggError or a working model', async () => {
    const rand = prng(SEED);
    const outcome: Outcome = { codes: new Map(), loaded: 0, ran: 0 };
    for (let round = 0; round < 500; round++) {
      const [bytes, edits] = mutate(rand, () => 8 + Math.floor(rand() * (HEADER_END - 8)));
      await attempt(bytes, `seed ${SEED} round ${round} (${edits})`, outcome, true);
    }
    console.log(`      headers: ${summary(outcome)}`);
    assert.ok(outcome.codes.get('E_WEIGHTS_FORMAT')! > 100, 'most broken headers are E_WEIGHTS_FORMAT');
  });

  it('100 files with flips in the length prefix and the first data bytes: VggError or a working model', async () => {
    const rand = prng(SEED + 1);
    const outcome: Outcome = { codes: new Map(), loaded: 0, ran: 0 };
    for (let round = 0; round < 100; round++) {
      const [bytes, edits] = mutate(rand, () => (rand() < 0.5 ? Math.floor(rand() * 8) : HEADER_END + Math.floor(rand() * 512)));
      await attempt(bytes, `seed ${SEED + 1} round ${round} (${edits})`, outcome, false);
    }
    console.log(`      prefix/data: ${summary(outcome)}`);
    assert.ok(outcome.loaded > 0 && outcome.codes.size > 0, 'some files load (data flips) and some fail (length flips)');
  });

  it('the original file still loads and runs after all that', async () => {
    const outcome: Outcome = { codes: new Map(), loaded: 0, ran: 0 };
    await attempt(ORIGINAL, 'the unmodified fixture', outcome, true);
    assert.equal(outcome.ran, 1);
  });
});
