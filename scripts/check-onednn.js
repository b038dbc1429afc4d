#!/usr/bin/env node
// Runs before the native build: one clear line instead of a wall of compiler errors.
const fs = require('node:fs');
const path = require('node:path');

const roots = [process.env.DNNL_ROOT, '/usr', '/usr/local', '/opt/intel/oneapi/dnnl/latest'].filter(Boolean);
const found = roots.some((r) => fs.existsSync(path.join(r, 'include', 'oneapi', 'dnnl', 'dnnl.hpp')));
if (!found) {
  console.error('vggnet: oneDNN not found: install it with `apt-get install libdnnl-dev` (Debian/Ubuntu), or set DNNL_ROOT to a oneDNN install');
  process.exit(1);
}
