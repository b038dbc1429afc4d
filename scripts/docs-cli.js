#!/usr/bin/env node
// Rewrites the README's CLI reference from every command's --help (after `tsc`): `npm run docs:cli`.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { cliReference, withReference } = require('../dist/lib/cli/docs');

const readme = path.join(__dirname, '..', 'README.md');
fs.writeFileSync(readme, withReference(fs.readFileSync(readme, 'utf8'), cliReference()));
