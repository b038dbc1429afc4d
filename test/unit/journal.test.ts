import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { VggError } from '../../lib/errors';
import { writeAtomic } from '../../lib/files';
import { Journal, journalRecords, writeJournal, writerFor } from '../../lib/outputs';
import type { ExtractRecord } from '../../lib/tasks';
import { readF32, readSafetensorsFile } from '../../lib/weights';
import { tmpDir } from '../helpers';

describe('unit: journal', () => {
  const job = { batch: 2 };
  const row = (id: string, value: number): ExtractRecord => ({ id, outputs: { fc7: { data: new Float32Array(4).fill(value), shape: [1, 4] } } });
  /** A journal of two chunks, one failed image in the second. */
  async function started(): Promise<string> {
    const dir = path.join(tmpDir(), 'out.safetensors.partial');
    const journal = Journal.open(dir, ['fc7'], job, false);
    await journal.add([row('a', 1), row('b', 2)]);
    await journal.flush();
    await journal.add([row('c', 3), { id: 'd', error: new VggError('E_IMAGE', 'd: bad') }]);
    await journal.flush();
    return dir;
  }

  it('resumes with the chunks committed', async () => {
    const journal = Journal.open(await started(), ['fc7'], job, true);
    assert.deepEqual([journal.items, journal.rows, journal.failed], [4, 3, 1]);
    assert.deepEqual([...journal.itemIds()], ['a', 'b', 'c', 'd']);
    assert.deepEqual([...journal.rowValues()].map((r) => [r.id, r.values.fc7[0]]), [['a', 1], ['b', 2], ['c', 3]]);
  });

  it('says which file of a damaged journal is bad, and to fix it or delete the folder (E_IO)', async () => {
    for (const [file, content] of [['000000000002.json', 'truncated'], ['000000000002.json', 'null'], ['000000000000.json', '{}'], ['job.json', 'truncated']]) {
      const dir = await started();
      const damaged = path.join(dir, file);
      fs.writeFileSync(damaged, content === 'truncated' ? fs.readFileSync(damaged).subarray(0, 10) : content);
      for (const resume of file === 'job.json' ? [true, false] : [true]) {
        assert.throws(() => Journal.open(dir, ['fc7'], job, resume), (e) => {
          assert.ok(e instanceof VggError, String(e));
          assert.equal(e.code, 'E_IO');
          assert.ok(e.message.startsWith(`${damaged} `), e.message);
          assert.match(e.message, /fix it, or delete .*out\.safetensors\.partial/);
          return true;
        }, `${file} ${content}`);
      }
    }
  });

  it('writes atomically: a failed write names the file, not the temporary one, and leaves nothing', () => {
    const dir = tmpDir();
    const file = path.join(dir, 'x.bin');
    assert.throws(() => writeAtomic(path.join(dir, 'no', 'x.bin'), (out) => out.write('x')),
      (e: VggError) => e.code === 'E_IO' && e.message === `cannot write ${path.join(dir, 'no', 'x.bin')}: ENOENT`);
    const bad = new VggError('E_SHAPE', 'a bad row');
    assert.throws(() => writeAtomic(file, (out) => { out.write('partial'); throw bad; }), (e) => e === bad);
    assert.deepEqual(fs.readdirSync(dir), []);
    writeAtomic(file, (out) => { out.write('one'); out.write(Buffer.from(' two')); });
    assert.equal(fs.readFileSync(file, 'utf8'), 'one two');
    assert.deepEqual(fs.readdirSync(dir), ['x.bin']);
  });
});

describe('unit: records to file', () => {
  const row = (id: string, value: number): ExtractRecord => ({ id, outputs: { fc7: { data: new Float32Array(3).fill(value), shape: [1, 3] } } });
  async function* records(n: number, failEvery = 0): AsyncGenerator<ExtractRecord> {
    for (let i = 0; i < n; i++) {
      yield failEvery && i % failEvery === failEvery - 1 ? { id: `img${i}`, error: new VggError('E_IMAGE', `img${i}: bad`) } : row(`img${i}`, i);
    }
  }

  it('journals whole batches, then writes the rows and the failures, and a resumed journal has them all', async () => {
    const dir = tmpDir();
    const journal = Journal.open(path.join(dir, 'out.partial'), ['fc7'], {}, false);
    const batchSizes: number[] = [];
    let afterBatch = 0;
    const count = await journalRecords(records(7, 3), journal, { batchSize: 3, onRecord: () => batchSizes.push(0), afterBatch: async () => { afterBatch++; } });
    assert.equal(count, 7);
    assert.equal(batchSizes.length, 7);
    assert.equal(afterBatch, 2, 'afterBatch after each whole batch');
    assert.deepEqual([journal.items, journal.rows, journal.failed], [7, 5, 2]);
    const reopened = Journal.open(path.join(dir, 'out.partial'), ['fc7'], {}, true);
    assert.deepEqual([...reopened.itemIds()], ['img0', 'img1', 'img2', 'img3', 'img4', 'img5', 'img6']);

    const out = path.join(dir, 'out.jsonl');
    writeJournal(journal, out, writerFor(out, ['fc7']), `${out}.errors.jsonl`);
    const lines = fs.readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    assert.deepEqual(lines.map((l) => [l.id, l.fc7[0]]), [['img0', 0], ['img1', 1], ['img3', 3], ['img4', 4], ['img6', 6]]);
    const errors = fs.readFileSync(`${out}.errors.jsonl`, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    assert.deepEqual(errors, [{ id: 'img2', code: 'E_IMAGE', message: 'img2: bad' }, { id: 'img5', code: 'E_IMAGE', message: 'img5: bad' }]);
  });

  it('without failures removes a stale errors file, unless it is kept (a job shard)', async () => {
    const dir = tmpDir();
    for (const keep of [false, true]) {
      const journal = Journal.open(path.join(dir, `j${keep}`), ['fc7'], {}, false);
      await journalRecords(records(4), journal, { batchSize: 2 });
      const out = path.join(dir, `out${keep}.safetensors`);
      fs.writeFileSync(`${out}.errors.jsonl`, 'stale\n');
      writeJournal(journal, out, writerFor(out, ['fc7']), `${out}.errors.jsonl`, keep);
      assert.equal(fs.existsSync(`${out}.errors.jsonl`), keep);
      if (keep) assert.equal(fs.readFileSync(`${out}.errors.jsonl`, 'utf8'), '');
    }
  });

  it('commits on a timer while records still come, so a crash loses at most that much', async () => {
    const dir = tmpDir();
    const journal = Journal.open(path.join(dir, 'timer.partial'), ['fc7'], {}, false);
    async function* slow(): AsyncGenerator<ExtractRecord> {
      for (let i = 0; i < 4; i++) yield row(`img${i}`, i);
      await new Promise((r) => setTimeout(r, 120));
      const committed = fs.readdirSync(path.join(dir, 'timer.partial')).filter((f) => f.endsWith('.json') && f !== 'job.json');
      assert.ok(committed.length >= 1, 'the first batches were committed while the source waited');
      yield row('img4', 4);
    }
    assert.equal(await journalRecords(slow(), journal, { batchSize: 2, commitMs: 30 }), 5);
    assert.equal(journal.items, 5);
  });

  it('writes the same rows as .safetensors (ids in the metadata) and .npy (ids beside it)', async () => {
    const dir = tmpDir();
    const journal = Journal.open(path.join(dir, 'w.partial'), ['fc7'], {}, false);
    await journalRecords(records(5, 2), journal, { batchSize: 2 });
    const st = path.join(dir, 'w.safetensors');
    writerFor(st, ['fc7'])(st, journal);
    const file = readSafetensorsFile(st);
    assert.deepEqual(JSON.parse(file.metadata.ids), ['img0', 'img2', 'img4']);
    const entry = file.tensors.get('fc7')!;
    assert.deepEqual(entry.shape, [3, 3]);
    assert.deepEqual(Array.from(readF32(file, entry)), [0, 0, 0, 2, 2, 2, 4, 4, 4]);
    const npy = path.join(dir, 'w.npy');
    writerFor(npy, ['fc7'])(npy, journal);
    const bytes = fs.readFileSync(npy);
    const headerEnd = 10 + bytes.readUInt16LE(8);
    assert.match(bytes.subarray(10, headerEnd).toString('latin1'), /'shape': \(3, 3\)/);
    assert.equal(headerEnd % 64, 0);
    assert.deepEqual(Array.from(new Float32Array(bytes.buffer.slice(bytes.byteOffset + headerEnd, bytes.byteOffset + bytes.length))), [0, 0, 0, 2, 2, 2, 4, 4, 4]);
    assert.equal(fs.readFileSync(`${npy}.ids.txt`, 'utf8'), 'img0\nimg2\nimg4\n');
  });

  it('writerFor refuses an unknown extension and several blobs in one .npy, before any work', () => {
    assert.throws(() => writerFor('x.csv', ['fc7']), (e) => e instanceof VggError && e.code === 'E_ARG' && /\.safetensors, \.npy, \.jsonl/.test(e.message));
    assert.throws(() => writerFor('x.npy', ['fc7', 'pool5']), /a \.npy file holds one blob/);
  });
});
