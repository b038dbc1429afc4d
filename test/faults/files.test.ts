import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { VggError } from '../../lib/errors';
import { loadModel, type Model } from '../../lib/model';
import { preprocess } from '../../lib/images/preprocess';
import { extract } from '../../lib/tasks/extract';
import { fixture, tmpDir } from '../helpers';
import { images, vgg } from './tools';

const D = fixture('D.weights.safetensors');
/** Long enough for the CLI to start and answer; a hang runs into it. */
const PATIENCE = 30_000;

/** A FIFO no one writes to: whoever opens it to read waits forever. */
function fifo(name: string): string {
  const file = path.join(tmpDir(), name);
  execFileSync('mkfifo', [file]);
  return file;
}

describe('faults: FIFOs, devices and endless streams as inputs', function () {
  this.timeout(120_000);

  it('preprocess of a FIFO is E_IMAGE "not a regular file", at once', async () => {
    const file = fifo('photo.png');
    await assert.rejects(preprocess(file), (e: unknown) => e instanceof VggError && e.code === 'E_IMAGE' && e.message.includes(file) && /not a regular file/.test(e.message));
  });

  it('vgg classify of a FIFO records it as a failed image and exits 2 instead of hanging', () => {
    const file = fifo('photo.jpg');
    const r = vgg(['classify', file, '--weights', D, '--threads', '2'], { timeout: PATIENCE });
    assert.equal(r.signal, null, 'hung until killed');
    assert.equal(r.status, 2, r.stderr); // a failed image, as vgg classify records any (exit 2)
    assert.match(r.stderr, /E_IMAGE.*not a regular file/);
  });

  it('extract (what vgg extract and job workers run) records a FIFO among images as failed and goes on', async () => {
    const dir = await images(3);
    const list = fs.readdirSync(dir).map((f) => path.join(dir, f));
    const pipe = fifo('middle.png');
    let model: Model | undefined;
    try {
      model = await loadModel(D, { threads: 2 });
      const records = [];
      for await (const r of extract(model, [list[0], pipe, list[1], list[2]], { outputs: ['fc7'], batchSize: 2, preprocess: { size: 40, crop: 32 } })) records.push(r);
      assert.deepEqual(records.map((r) => r.error?.code), [undefined, 'E_IMAGE', undefined, undefined]);
      assert.match(records[1].error!.message, /not a regular file/);
    } finally {
      await model?.dispose();
    }
  });

  it('vgg extract of a list naming a FIFO exits 2 with it among the failures', async () => {
    const dir = await images(2);
    const list = path.join(tmpDir(), 'list.txt');
    fs.writeFileSync(list, [...fs.readdirSync(dir).map((f) => path.join(dir, f)), fifo('stuck.png')].join('\n'));
    const out = path.join(tmpDir(), 'features.jsonl');
    const r = vgg(['extract', list, '--weights', D, '--out', out, '--size', '40', '--crop', '32', '--threads', '2'], { timeout: PATIENCE });
    assert.equal(r.signal, null, 'hung until killed');
    assert.equal(r.status, 2, r.stderr);
    assert.match(fs.readFileSync(`${out}.errors.jsonl`, 'utf8'), /stuck\.png.*E_IMAGE.*not a regular file/);
  });

  for (const [what, input] of [['/dev/zero', () => '/dev/zero'], ['a FIFO', () => fifo('input.safetensors')]] as const) {
    it(`vgg run --input ${what} is E_IO "not a regular file" instead of reading forever`, () => {
      const r = vgg(['run', '--weights', D, '--input', input(), '--outputs', 'fc7', '--out', path.join(tmpDir(), 'o.safetensors')], { timeout: PATIENCE });
      assert.equal(r.signal, null, 'hung until killed');
      assert.equal(r.status, 1, r.stderr);
      assert.match(r.stderr, /E_IO.*not a regular file/);
    });
  }

  it('a FIFO as weights, checkpoint or calibration is E_IO "not a regular file"', async () => {
    const notRegular = (e: unknown) => e instanceof VggError && e.code === 'E_IO' && /not a regular file/.test(e.message);
    await assert.rejects(loadModel(fifo('w.safetensors')), notRegular);
    await assert.rejects(loadModel(D, { precision: 'int8', calibration: fifo('c.json') }), notRegular);
    const r = vgg(['convert', fifo('w.pth'), path.join(tmpDir(), 'w.safetensors')], { timeout: PATIENCE });
    assert.equal(r.signal, null, 'hung until killed');
    assert.match(r.stderr, /E_IO.*not a regular file/);
  });
});
