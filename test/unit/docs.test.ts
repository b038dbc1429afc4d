import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';

const ROOT = path.resolve(__dirname, '../../..');

describe('unit: docs', () => {
  it("the README's error table lists every code VggError can carry", () => {
    const errors = fs.readFileSync(path.join(ROOT, 'lib/errors.ts'), 'utf8');
    const union = errors.slice(errors.indexOf('export type VggErrorCode'), errors.indexOf(';', errors.indexOf('export type VggErrorCode')));
    const codes = [...union.matchAll(/'(E_[A-Z_]+)'/g)].map((m) => m[1]);
    assert.ok(codes.length >= 10, codes.join(' '));
    const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
    const table = readme.slice(readme.indexOf('### Errors'), readme.indexOf('\n## ', readme.indexOf('### Errors')));
    const rows = new Set([...table.matchAll(/`(E_[A-Z_]+)`/g)].map((m) => m[1]));
    assert.deepEqual(codes.filter((c) => !rows.has(c)), []);
  });

  it('ARCHITECTURE.md names every folder of lib/', () => {
    const map = fs.readFileSync(path.join(ROOT, 'ARCHITECTURE.md'), 'utf8');
    const folders = fs.readdirSync(path.join(ROOT, 'lib'), { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => `${e.name}/`);
    assert.deepEqual(folders.filter((f) => !map.includes(`\`${f}\``)), []);
  });
});
