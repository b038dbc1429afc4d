import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { tmpDir } from './helpers';

// The loader in a copy of dist/lib laid out as an installed package: which addon it picks, and
// what it says when there is none. Each case runs in its own node (the addon loads once).
const built = path.resolve(__dirname, '../../build/Release/vggnet.node');
const platformPackage = `@vggnet/${process.platform}-${process.arch}`;

/** A package folder with dist/lib, and optionally a local build and a platform package beside it. */
function layout(options: { local?: Buffer | 'addon'; platform?: boolean }): string {
  const root = tmpDir();
  fs.cpSync(path.resolve(__dirname, '../lib'), path.join(root, 'dist', 'lib'), { recursive: true });
  if (options.local) {
    fs.mkdirSync(path.join(root, 'build', 'Release'), { recursive: true });
    const file = path.join(root, 'build', 'Release', 'vggnet.node');
    if (options.local === 'addon') fs.copyFileSync(built, file);
    else fs.writeFileSync(file, options.local);
  }
  if (options.platform) {
    const dir = path.join(root, 'node_modules', platformPackage);
    fs.mkdirSync(path.join(dir, 'lib'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: platformPackage, exports: { './vggnet.node': './lib/vggnet.node' } }));
    fs.copyFileSync(built, path.join(dir, 'lib', 'vggnet.node'));
  }
  return root;
}

/** Loads the addon in `root`: the file it came from, or the error's code and message. */
function load(root: string): { file?: string; code?: string; message?: string } {
  const script = `
    try {
      require(${JSON.stringify(path.join(root, 'dist', 'lib', 'native.js'))}).native().versions();
      console.log(JSON.stringify({ file: Object.keys(require.cache).find((f) => f.endsWith('.node')) }));
    } catch (e) {
      console.log(JSON.stringify({ code: e.code, message: e.message }));
    }`;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as { file?: string };
}

describe('native: finding the addon', () => {
  it('takes the platform package where there is no local build (an installed vggnet)', () => {
    const root = layout({ platform: true });
    assert.equal(load(root).file, path.join(root, 'node_modules', platformPackage, 'lib', 'vggnet.node'));
  });

  it('takes a local build before the platform package (a clone, or a from-source build)', () => {
    const root = layout({ local: 'addon', platform: true });
    assert.equal(load(root).file, path.join(root, 'build', 'Release', 'vggnet.node'));
  });

  it('with neither, says in one line where prebuilt addons exist and how to build one', () => {
    const { code, message } = load(layout({}));
    assert.equal(code, 'E_BACKEND');
    assert.doesNotMatch(message!, /\n/);
    assert.match(message!, new RegExp(`^vggnet has no native addon for ${process.platform}-${process.arch}`));
    assert.match(message!, /prebuilt addons are for linux-x64 with glibc 2\.34\+/);
    assert.match(message!, /apt-get install libdnnl-dev g\+\+ make python3 && npm explore vggnet -- npm run build:source$/);
  });

  it('an addon that cannot load is E_BACKEND naming the file and the reason', () => {
    const root = layout({ local: Buffer.from('not an ELF file') });
    const { code, message } = load(root);
    assert.equal(code, 'E_BACKEND');
    assert.match(message!, new RegExp(`^cannot load the native addon ${path.join(root, 'build', 'Release', 'vggnet.node')}: .*(invalid ELF header|too short)`));
  });
});
