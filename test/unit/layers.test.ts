import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';

// The layering ARCHITECTURE.md describes, checked on the source: lower layers never import
// higher ones, and no import circle exists between lib/ files, type-only imports included.
const LIB = path.resolve(__dirname, '../../../lib');

/** Each file's layer, lowest first: the base files, then each folder, then the applications. */
const LAYERS: [RegExp, number][] = [
  [/^(errors|tensor|files|native)\.ts$/, 0],
  [/^arch\//, 1],
  [/^weights\//, 2],
  [/^engine\//, 3],
  [/^images\//, 4],
  [/^tasks\//, 5],
  [/^outputs\//, 6],
  [/^model\.ts$/, 7],
  [/^(serve|jobs|train)\//, 8],
  [/^cli\//, 9],
  [/^index\.ts$/, 10],
];

function layerOf(file: string): number {
  const layer = LAYERS.find(([re]) => re.test(file));
  assert.ok(layer, `${file} belongs to no layer: add it to ARCHITECTURE.md and to this test`);
  return layer[1];
}

function sources(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const full = path.join(dir, e.name);
    if (e.isDirectory()) return sources(full);
    return e.name.endsWith('.ts') ? [path.relative(LIB, full)] : [];
  });
}

/** The lib/ files a file imports: static, type-only, dynamic and require() alike. */
function importsOf(file: string): string[] {
  const text = fs.readFileSync(path.join(LIB, file), 'utf8');
  const out: string[] = [];
  for (const m of text.matchAll(/(?:from\s+|import\s*\(\s*|require\(\s*|import\s+)'(\.{1,2}\/[^']*)'/g)) {
    const target = path.normalize(path.join(path.dirname(file), m[1]));
    const resolved = [`${target}.ts`, path.join(target, 'index.ts')].find((f) => fs.existsSync(path.join(LIB, f)));
    if (resolved) out.push(resolved);
  }
  return out;
}

describe('unit: layers', () => {
  const files = sources(LIB);
  const graph = new Map(files.map((f) => [f, importsOf(f)]));

  it('finds the files and their imports', () => {
    assert.ok(files.length > 40, `${files.length} files`);
    assert.ok(graph.get('model.ts')!.includes('engine/index.ts'));
  });

  it('imports point down the layers, never up', () => {
    const up = [...graph].flatMap(([from, tos]) => tos.filter((to) => layerOf(to) > layerOf(from)).map((to) => `${from} -> ${to}`));
    assert.deepEqual(up, []);
  });

  it('has no import circle between files', () => {
    const state = new Map<string, 'open' | 'done'>();
    const circles: string[] = [];
    const visit = (file: string, trail: string[]) => {
      if (state.get(file) === 'done') return;
      if (state.get(file) === 'open') {
        circles.push([...trail.slice(trail.indexOf(file)), file].join(' -> '));
        return;
      }
      state.set(file, 'open');
      for (const next of graph.get(file) ?? []) visit(next, [...trail, file]);
      state.set(file, 'done');
    };
    for (const file of files) visit(file, []);
    assert.deepEqual(circles, []);
  });

  it('keeps every file in lib/ under 400 lines and at most six at the top', () => {
    const long = files.filter((f) => fs.readFileSync(path.join(LIB, f), 'utf8').split('\n').length > 400);
    assert.deepEqual(long, []);
    assert.ok(files.filter((f) => !f.includes('/')).length <= 6);
  });
});
