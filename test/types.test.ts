// vggnet as a dependency: the published declarations compile in a consumer's `tsc --strict`
// (skipLibCheck off: every .d.ts they pull in is checked) with and without esModuleInterop,
// as CommonJS and as ESM; vggnetPlugin's options are type-checked by fastify 4's and 5's
// register; and the package's `exports` serve both `require('vggnet')` and `import` at run time.
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fixture, tmpDir } from './helpers';

const ROOT = path.resolve(__dirname, '../..');

const CONSUMER = `import { loadModel, createServer, extract, fetchWeights, defaultWeights, VggError, type VggErrorCode, type Outputs, type FetchProgress } from 'vggnet';
export async function weights(signal: AbortSignal): Promise<string> {
  const fetched = await fetchWeights('vgg16', { cacheDir: '/tmp/hub', endpoint: 'http://127.0.0.1:1', onProgress: (p: FetchProgress) => void p.received, signal });
  return fetched.cached ? fetched.path : defaultWeights({ quiet: true });
}
export async function features(weights: string): Promise<Outputs> {
  const model = await loadModel(weights, { threads: 1 });
  const out = await model.run({ data: new Float32Array(3 * 224 * 224), shape: [1, 3, 224, 224] }, { outputs: ['fc7'] });
  for await (const record of extract(model, ['a.jpg'], { outputs: ['fc7'] })) if ('error' in record) throw record.error;
  const app = createServer(model, { maxBatch: 4 });
  await app.listen({ port: 0 });
  await app.vggnet.warm();
  await app.close();
  return out;
}
export const isArg = (e: unknown): boolean => e instanceof VggError && e.code === ('E_ARG' satisfies VggErrorCode);
`;

const PLUGIN_CONSUMER = `import Fastify from 'fastify';
import Fastify4 from 'fastify4';
import { loadModel, vggnetPlugin } from 'vggnet';
export async function mount(): Promise<void> {
  const model = await loadModel('w.safetensors');
  await Fastify().register(vggnetPlugin, { model, prefix: '/vgg', maxBatch: 4 });
  await Fastify4().register(vggnetPlugin, { model, prefix: '/vgg' });
  // @ts-expect-error: the options need a model
  await Fastify().register(vggnetPlugin, { maxBatch: 4 });
  // @ts-expect-error: maxBatch is a number
  await Fastify4().register(vggnetPlugin, { model, maxBatch: '4' });
}
`;

/** A folder whose node_modules has vggnet (this checkout) and the given packages of ours. */
function app(packages: string[]): string {
  const dir = tmpDir();
  fs.mkdirSync(path.join(dir, 'node_modules'));
  fs.symlinkSync(ROOT, path.join(dir, 'node_modules', 'vggnet'));
  for (const name of packages) fs.symlinkSync(path.join(ROOT, 'node_modules', name), path.join(dir, 'node_modules', name));
  return dir;
}

function tsc(dir: string, files: Record<string, string>, options: string[]): string {
  for (const [name, text] of Object.entries(files)) fs.writeFileSync(path.join(dir, name), text);
  const r = spawnSync(process.execPath, [require.resolve('typescript/bin/tsc'), '--strict', '--noEmit', '--skipLibCheck', 'false', '--target', 'ES2022',
    '--types', 'node', '--typeRoots', path.join(ROOT, 'node_modules/@types'), ...options, ...Object.keys(files).map((f) => path.join(dir, f))], { encoding: 'utf8' });
  return `${r.stdout}${r.stderr}`.trim();
}

function node(dir: string, file: string, text: string): { status: number | null; out: string } {
  fs.writeFileSync(path.join(dir, file), text);
  const r = spawnSync(process.execPath, [file], { cwd: dir, encoding: 'utf8' });
  return { status: r.status, out: `${r.stdout}${r.stderr}`.trim() };
}

describe('vggnet as a dependency', function () {
  this.timeout(120_000);

  it('its declarations compile in a CommonJS consumer under --strict without esModuleInterop', () => {
    assert.equal(tsc(app([]), { 'consumer.ts': CONSUMER }, ['--module', 'commonjs', '--moduleResolution', 'node10', '--esModuleInterop', 'false']), '');
  });

  it('... and with esModuleInterop, where fastify 5\'s and 4\'s register check vggnetPlugin\'s options', () => {
    const files = { 'consumer.ts': CONSUMER, 'plugin.ts': PLUGIN_CONSUMER };
    assert.equal(tsc(app(['fastify', 'fastify4']), files, ['--module', 'commonjs', '--moduleResolution', 'node10', '--esModuleInterop', 'true']), '');
  });

  it('its declarations compile in an ESM consumer (module nodenext: the types of exports\' import)', () => {
    assert.equal(tsc(app([]), { 'consumer.mts': CONSUMER }, ['--module', 'nodenext']), '');
  });

  it('require(\'vggnet\') and import from \'vggnet\' give the same exports, and run a model', () => {
    const dir = app([]);
    const weights = JSON.stringify(fixture('D.weights.safetensors'));
    const run = `const m = await loadModel(${weights}, { threads: 1 });
      const { fc7 } = await m.run({ data: new Float32Array(3 * 224 * 224), shape: [1, 3, 224, 224] }, { outputs: ['fc7'] });
      await m.dispose();`;
    const cjs = node(dir, 'app.cjs', `const vggnet = require('vggnet'); const { loadModel } = vggnet;
      (async () => { ${run} console.log(JSON.stringify([Object.keys(vggnet).sort(), fc7.shape])); })();`);
    const esm = node(dir, 'app.mjs', `import * as vggnet from 'vggnet'; import { loadModel } from 'vggnet';
      ${run} console.log(JSON.stringify([Object.keys(vggnet).filter((k) => k !== '__esModule').sort(), fc7.shape]));`);
    assert.equal(cjs.status, 0, cjs.out);
    assert.equal(esm.status, 0, esm.out);
    const [cjsNames, shape] = JSON.parse(cjs.out);
    assert.deepEqual(shape, [1, 256]);
    assert.ok(cjsNames.includes('loadModel') && cjsNames.includes('createServer'));
    assert.deepEqual(JSON.parse(esm.out), [cjsNames, shape]);
  });
});
