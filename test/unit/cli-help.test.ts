import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cliReference, withReference } from '../../lib/cli/docs';
import { allCommands, commandPath, hasHelpExtras } from '../../lib/cli/help';
import { buildProgram } from '../../lib/cli/program';

const ROOT = path.resolve(__dirname, '../../..');

describe('unit: vgg --help', () => {
  const reference = cliReference();

  it('every command has an example and its exit statuses', () => {
    const missing = allCommands(buildProgram()).filter((c) => !hasHelpExtras(c)).map(commandPath);
    assert.deepEqual(missing, [], 'add them to EXTRAS in lib/cli/help.ts');
    const blocks = reference.split('\n`vgg ').slice(2); // after `vgg --help`
    assert.ok(blocks.length >= 15, `${blocks.length} commands`);
    for (const block of blocks) {
      assert.match(block, /\nExample:\n {2}vgg /, block.slice(0, 40));
      assert.match(block, /\nExit status:\n {2}/, block.slice(0, 40));
    }
  });

  it('shows defaults as a user types them, not as JSON', () => {
    assert.doesNotMatch(reference, /\(default: [[{"]/);
    assert.match(reference, /--outputs <blobs> +comma-separated blob names \(default: fc7\)/);
    assert.match(reference, /--size <list> +input sizes HxW to pack for \(default: 224x224\)/);
    assert.match(reference, /--batch <list> +batch sizes to pack for \(default: 1,8\)/);
    assert.match(reference, /--head <head> +classifier head \(choices: "fixed", "dense", default: fixed\)/);
  });

  it("the README's CLI reference is every command's --help (npm run docs:cli rewrites it)", () => {
    const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
    assert.ok(withReference(readme, reference) === readme, "README.md's CLI reference is out of date: run npm run docs:cli");
  });
});
