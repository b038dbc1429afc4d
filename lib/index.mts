// The ESM entry (package.json `exports` → import): the named exports of the CommonJS build
// (`import { loadModel } from 'vggnet'`, or `import * as vggnet from 'vggnet'`).
export * from './index.js';
