#!/usr/bin/env node
// npm run package: every tarball a registry would receive, in packages/ (git-ignored):
//   vggnet-<v>.tgz             the TypeScript build, the addon's sources (to build from source),
//                              no install script; the platform package in optionalDependencies
//   vggnet-linux-x64-<v>.tgz   @vggnet/linux-x64: build/Release/vggnet.node and every shared
//                              library it needs beyond glibc, libstdc++ and libgcc (found through
//                              its $ORIGIN rpath, set at link time), with their license texts
// `npm run package` compiles a fresh dist/ first (no stale files from moved sources). Run after
// `npm run build:native` on linux-x64 glibc with Debian's libdnnl (dpkg names the packages
// whose copyright files go beside the libraries).
'use strict';
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const out = path.join(root, 'packages');
const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
const PLATFORM = 'linux-x64';
const platformName = `@vggnet/${PLATFORM}`;

/** What every glibc system has: never bundled. */
const SYSTEM = /^(linux-vdso|ld-linux-x86-64|libc|libm|libdl|libpthread|librt|libstdc\+\+|libgcc_s)\.so/;
/** The SPDX license of each library we know how to ship; a new one must be added here. */
const LICENSES = {
  'libdnnl.so.2': 'Apache-2.0',
  'libgomp.so.1': 'GPL-3.0-or-later WITH GCC-exception-3.1',
  'libOpenCL.so.1': 'BSD-2-Clause',
};

class PackageError extends Error {}
function fail(message) {
  throw new PackageError(message);
}

const run = (cmd, args, options = {}) => execFileSync(cmd, args, { encoding: 'utf8', ...options });

/** soname -> resolved path for every library ldd lists; throws on one it cannot find. */
function ldd(file) {
  const env = { ...process.env };
  delete env.LD_LIBRARY_PATH;
  const libs = new Map();
  for (const line of run('ldd', [file], { env }).split('\n')) {
    const m = /^\s*(\S+)(?: => (.+?))? \(0x/.exec(line) ?? /^\s*(\S+) => (not found)/.exec(line);
    if (!m) continue;
    if (m[2] === 'not found') fail(`${file} needs ${m[1]}, which is not found`);
    libs.set(path.basename(m[1]), m[2] ?? m[1]);
  }
  return libs;
}

/** The Debian copyright file of the package that installed `file`, and the common licenses it cites. */
function licenseTexts(file) {
  const real = fs.realpathSync(file);
  const candidates = [file, real, ...[file, real].filter((f) => !f.startsWith('/usr/')).map((f) => '/usr' + f)];
  for (const candidate of candidates) {
    let owner;
    try {
      owner = run('dpkg', ['-S', candidate], { stdio: ['ignore', 'pipe', 'ignore'] }).split(':')[0];
    } catch {
      continue;
    }
    const copyright = `/usr/share/doc/${owner}/copyright`;
    const text = fs.readFileSync(copyright, 'utf8');
    const cited = [...new Set(text.match(/\/usr\/share\/common-licenses\/[A-Za-z0-9.+-]*[A-Za-z0-9+-]/g) ?? [])]
      .filter((f) => fs.existsSync(f));
    return { copyright, cited };
  }
  return fail(`no Debian package owns ${file}: its license text cannot be found (build against Debian's libdnnl-dev)`);
}

function pack(dir) {
  const name = run('npm', ['pack', '--ignore-scripts', '--silent', '--pack-destination', out], { cwd: dir }).trim().split('\n').pop();
  const size = fs.statSync(path.join(out, name)).size;
  console.log(`packages/${name}  ${(size / 1e6).toFixed(1)} MB`);
}

function platformPackage(stage) {
  const addon = path.join(root, 'build', 'Release', 'vggnet.node');
  if (!fs.existsSync(addon)) fail('build/Release/vggnet.node is missing: run `npm run build` first');
  if (`${process.platform}-${process.arch}` !== PLATFORM || !process.report.getReport().header.glibcVersionRuntime) {
    fail(`the prebuilt addon is made on ${PLATFORM} with glibc, not on ${process.platform}-${process.arch}`);
  }
  const lib = path.join(stage, 'lib');
  fs.mkdirSync(path.join(lib, 'common-licenses'), { recursive: true });
  fs.copyFileSync(addon, path.join(lib, 'vggnet.node'));
  const bundled = [...ldd(addon)].filter(([soname]) => !SYSTEM.test(soname));
  for (const [soname, file] of bundled) {
    if (!LICENSES[soname]) fail(`the addon needs ${soname} (${file}), which scripts/package.js does not know how to ship: add its license to LICENSES`);
    fs.copyFileSync(file, path.join(lib, soname));
    const { copyright, cited } = licenseTexts(file);
    fs.copyFileSync(copyright, path.join(lib, `${soname}.copyright`));
    for (const f of cited) fs.copyFileSync(f, path.join(lib, 'common-licenses', path.basename(f)));
  }
  // The staged addon must find every bundled library beside itself, none from the system.
  for (const [soname, file] of ldd(path.join(lib, 'vggnet.node'))) {
    if (!SYSTEM.test(soname) && path.dirname(file) !== lib) fail(`the packaged addon loads ${soname} from ${file}, not from beside it: is its rpath $ORIGIN?`);
  }
  const names = bundled.map(([soname]) => soname);
  fs.writeFileSync(path.join(stage, 'package.json'), JSON.stringify({
    name: platformName,
    version: pkg.version,
    description: `vggnet's prebuilt native addon for ${PLATFORM} (glibc), with ${names.join(', ')}`,
    license: ['MIT', ...new Set(names.map((n) => LICENSES[n]))].map((l) => (l.includes(' ') ? `(${l})` : l)).join(' AND '),
    ...(pkg.repository && { repository: pkg.repository }),
    os: ['linux'],
    cpu: ['x64'],
    libc: ['glibc'],
    files: ['lib'],
    exports: { './vggnet.node': './lib/vggnet.node', './package.json': './package.json' },
  }, null, 2) + '\n');
  fs.writeFileSync(path.join(stage, 'README.md'), `# ${platformName}

The prebuilt native addon of [vggnet](https://www.npmjs.com/package/vggnet) ${pkg.version} for ${PLATFORM}
with glibc 2.34 or later and libstdc++ from GCC 12 or later (Debian 12, Ubuntu 22.04 and later).
npm installs it with vggnet; it is not meant to be used on its own.

\`lib/\` holds the addon and the libraries it loads from beside itself (its rpath is \`$ORIGIN\`),
copied from Debian 12's packages, each with that package's copyright file
(\`lib/<library>.copyright\`) and the license texts it cites (\`lib/common-licenses/\`):
${bundled.map(([soname]) => `- \`${soname}\`: ${LICENSES[soname]}`).join('\n')}
`);
  if (fs.existsSync(path.join(root, 'LICENSE'))) fs.copyFileSync(path.join(root, 'LICENSE'), path.join(stage, 'LICENSE'));
  pack(stage);
}

/**
 * vggnet's own tarball: the files `npm pack` would take from the clone, with a package.json for
 * users: the platform package in optionalDependencies (listed only here, since an unpublished
 * package in the clone's package.json breaks `npm ci`), no install script and no automatic
 * node-gyp build (gypfile: false), and the from-source build as a script a user runs on purpose.
 */
function mainPackage(stage) {
  const listed = JSON.parse(run('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: root }))[0].files;
  for (const { path: file } of listed) {
    if (file === 'package.json') continue;
    fs.mkdirSync(path.join(stage, path.dirname(file)), { recursive: true });
    fs.copyFileSync(path.join(root, file), path.join(stage, file));
  }
  const published = { ...pkg };
  delete published.devDependencies;
  published.scripts = { 'build:source': pkg.scripts['build:gyp'] };
  published.gypfile = false;
  published.optionalDependencies = { ...pkg.optionalDependencies, [platformName]: pkg.version };
  fs.writeFileSync(path.join(stage, 'package.json'), JSON.stringify(published, null, 2) + '\n');
  pack(stage);
}

fs.rmSync(out, { recursive: true, force: true });
const stages = path.join(out, '.stage');
const stage = (name) => fs.mkdirSync(path.join(stages, name), { recursive: true }) && path.join(stages, name);
try {
  mainPackage(stage('vggnet'));
  platformPackage(stage(PLATFORM));
} catch (e) {
  if (!(e instanceof PackageError)) throw e;
  console.error(`npm run package: ${e.message}`);
  process.exitCode = 1;
} finally {
  fs.rmSync(stages, { recursive: true, force: true });
}
