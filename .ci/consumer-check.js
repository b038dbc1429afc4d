// node .ci/consumer-check.js APP ADDON_DIR: in an app that installed vggnet, require('vggnet'),
// load VGG16 (config D) and check fc8 against the PyTorch fixture; check in /proc/self/maps that
// the addon came from ADDON_DIR (the platform package's lib/, or a from-source build/Release) and
// every library shipped beside it (libdnnl, libgomp, libOpenCL) from there and nowhere else.
'use strict';
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { createRequire } = require('node:module');

const [app, addonDir] = process.argv.slice(2).map((p) => fs.realpathSync(p));
const appRequire = createRequire(path.join(app, 'package.json'));
// The fixtures and the tensor reader come from the clone (dist/test), the engine from the app.
const { FIXTURES, readTensors, relError } = require('../dist/test/helpers');

(async () => {
  const { loadModel } = appRequire('vggnet');
  assert.ok(appRequire.resolve('vggnet').startsWith(path.join(app, 'node_modules') + path.sep));
  const model = await loadModel(path.join(FIXTURES, 'D.weights.safetensors'), { threads: 2 });
  const input = readTensors(path.join(FIXTURES, 'input-224.safetensors')).input;
  const expected = readTensors(path.join(FIXTURES, 'D.io.safetensors'))['224.fc8'];
  const { fc8 } = await model.run(input, { outputs: ['fc8'] });
  const err = relError(fc8.data, expected.data);
  assert.ok(err <= 1e-4, `fc8 against PyTorch: relative error ${err}`);

  const mapped = new Set(fs.readFileSync('/proc/self/maps', 'utf8').split('\n').map((l) => l.split(/\s+/)[5]).filter(Boolean));
  const find = (name) => [...mapped].filter((f) => path.basename(f).startsWith(name));
  const where = (files) => files.join(', ') || 'nowhere';
  assert.deepEqual(find('vggnet.node'), [path.join(addonDir, 'vggnet.node')], `vggnet.node mapped from ${where(find('vggnet.node'))}`);
  // Each library shipped beside the addon is mapped from there, and no other copy of it is.
  const bundled = fs.readdirSync(addonDir).filter((f) => /\.so\.\d+$/.test(f));
  for (const lib of bundled) {
    const files = find(lib.replace(/\.so\.\d+$/, '.so'));
    assert.deepEqual(files, [path.join(addonDir, lib)], `${lib} mapped from ${where(files)}`);
  }
  await model.dispose();
  console.log(`consumer: ${process.version}: fc8 relative error ${err.toExponential(1)}; addon from ${path.relative(app, addonDir)}, libdnnl from ${where(find('libdnnl.so'))}`);
})().catch((e) => {
  console.error(`consumer check failed: ${e.stack ?? e}`);
  process.exit(1);
});
