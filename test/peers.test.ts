// fastify, @fastify/multipart, prom-client and bullmq are optional peer dependencies: an app
// without them loads vggnet and runs models; vgg serve / vgg job and the library's server and
// job functions say in one line what to install. Each case is a child process in which the
// packages are missing (test/modules.ts), as in an app that never installed them.
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fixture, tmpDir } from './helpers';
import { moduleEnv } from './modules';

const PEERS = ['fastify', '@fastify/multipart', 'prom-client', 'bullmq'];
const MODULES = path.resolve(__dirname, 'modules.js');
const MAIN = path.resolve(__dirname, '../lib/cli/main.js');
const LIB = path.resolve(__dirname, '../lib');
const missing = (names: string[]) => moduleEnv(Object.fromEntries(names.map((n) => [n, null])));

function node(args: string[], env: Record<string, string>) {
  const r = spawnSync(process.execPath, ['-r', MODULES, ...args], { encoding: 'utf8', env: { ...process.env, VGG_DEBUG: '', ...env }, timeout: 30_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Runs `body` (JS, with `lib` = require('vggnet')) in a child process; prints what it returns as JSON. */
function script(body: string, env: Record<string, string>): unknown {
  const r = node(['-e', `const lib = require(${JSON.stringify(LIB)}); (async () => { ${body} })().then((x) => console.log(JSON.stringify(x)))`], env);
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout);
}

describe('optional peer dependencies', () => {
  const peerRanges = (JSON.parse(fs.readFileSync(path.resolve(__dirname, '../../package.json'), 'utf8')) as { peerDependencies: Record<string, string> }).peerDependencies;

  it('are what package.json declares as optional peers', () => {
    const pkg = JSON.parse(fs.readFileSync(path.resolve(__dirname, '../../package.json'), 'utf8'));
    assert.deepEqual(Object.keys(pkg.peerDependencies).sort(), [...PEERS].sort());
    for (const name of PEERS) {
      assert.deepEqual(pkg.peerDependenciesMeta[name], { optional: true }, name);
      assert.equal(pkg.dependencies[name], undefined, `${name} is not a dependency`);
    }
  });

  it('an app without any of them requires vggnet and runs a model', () => {
    const out = script(`const m = await lib.loadModel(${JSON.stringify(fixture('D.weights.safetensors'))}, { threads: 1 });
      const { fc7 } = await m.run({ data: new Float32Array(3 * 224 * 224), shape: [1, 3, 224, 224] }, { outputs: ['fc7'] });
      await m.dispose();
      const found = ${JSON.stringify(PEERS)}.filter((name) => { try { return require.resolve(name); } catch { return false; } });
      return [fc7.shape, found];`, missing(PEERS));
    assert.deepEqual(out, [[1, 256], []]); // the fixture's fc7 is 4096/16 wide; none of the peers to be found
  });

  it('vgg serve names the missing packages in one line, before it loads the model, and exits 1', () => {
    // The weights do not exist: the dependency check comes first.
    const r = node([MAIN, 'serve', '--weights', 'no-such.safetensors', '--port', '0'], missing(['fastify', 'prom-client']));
    assert.equal(r.status, 1);
    assert.equal(r.stderr, 'vgg: E_MISSING_DEPENDENCY: the HTTP service (vgg serve, createServer, vggnetPlugin) needs fastify and prom-client'
      + ' (optional peer dependencies of vggnet): npm install fastify@5 prom-client@15\n');
  });

  it('vgg job submit, worker and status name bullmq in one line and exit 1; submit writes nothing', () => {
    const out = path.join(tmpDir(), 'job');
    for (const args of [['submit', fixture('images'), '--weights', fixture('D.weights.safetensors'), '--out', out], ['worker'], ['status', 'abc']]) {
      const r = node([MAIN, 'job', ...args, '--redis', 'redis://127.0.0.1:1'], missing(['bullmq']));
      assert.equal(r.status, 1, args[0]);
      assert.equal(r.stderr, 'vgg: E_MISSING_DEPENDENCY: jobs on Redis (vgg job, submitJob, runWorker, jobStatus, mergeJob) needs bullmq'
        + ' (optional peer dependencies of vggnet): npm install bullmq@5\n', args[0]);
    }
    assert.ok(!fs.existsSync(out), 'no manifest of a job that was never queued');
  });

  it('createServer, vggnetPlugin, submitJob and runWorker throw E_MISSING_DEPENDENCY naming the package', () => {
    const out = script(`const model = { info: {}, blobNames: () => [], run: async () => ({}) };
      const failure = async (f) => { try { await f(); return 'no error'; } catch (e) { return [e.code, e.message]; } };
      return [
        await failure(() => lib.createServer(model)),
        await failure(() => require('fastify')().register(lib.vggnetPlugin, { model }).ready()),
        await failure(() => lib.submitJob(['a.png'], { weights: 'w', out: 'o' })),
        await failure(() => lib.runWorker({})),
      ];`, missing(['@fastify/multipart', 'bullmq'])) as [string, string][];
    for (const [i, name] of ['@fastify/multipart', '@fastify/multipart', 'bullmq', 'bullmq'].entries()) {
      assert.equal(out[i][0], 'E_MISSING_DEPENDENCY', String(out[i]));
      assert.match(out[i][1], new RegExp(` needs ${name} \\(optional peer dependencies of vggnet\\): npm install ${name}@\\d+$`));
    }
  });

  it('the install command names versions inside the peer ranges; a fastify 4 app gets @fastify/multipart 8', () => {
    const install = (command: string[], env: Record<string, string>) => {
      const r = node([MAIN, ...command], env);
      const m = /: npm install (.*)\n$/.exec(r.stderr);
      assert.ok(m, r.stderr);
      return m[1].split(' ');
    };
    const specs = [...install(['serve'], missing(PEERS)), ...install(['job', 'status', 'x'], missing(PEERS))];
    assert.deepEqual(specs.map((s) => s.replace(/@\d+$/, '')), PEERS);
    for (const spec of specs) {
      const [, name, major] = /^(.+)@(\d+)$/.exec(spec)!;
      assert.ok(peerRanges[name].split('||').some((r) => r.trim().startsWith(`^${major}.`)), `${spec} outside ${peerRanges[name]}`);
    }
    const fastify4 = moduleEnv({ 'fastify': 'fastify4', 'fastify/package.json': 'fastify4/package.json', '@fastify/multipart': null });
    assert.deepEqual(install(['serve'], fastify4), ['@fastify/multipart@8']);
  });
});
