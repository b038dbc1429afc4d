#!/usr/bin/env bash
# Packs what the GPU machine needs from npm (it has no network): the package's runtime
# dependencies, mocha, and the Node-API headers the addon builds against.
set -euo pipefail
root=$(git rev-parse --show-toplevel)
stage=$(mktemp -d)
cp "$root/package.json" "$root/package-lock.json" "$stage/"
# The dev dependencies go from the staged package.json: mocha, the headers and autocannon are wanted, the rest not;
# the optional peer dependencies (HTTP service, jobs) are added as an app that serves would.
(cd "$stage" && npm pkg delete devDependencies && npm install --ignore-scripts --no-audit --no-fund >/dev/null &&
  npm install --no-save --ignore-scripts --no-audit --no-fund mocha@11 node-api-headers@1 autocannon@9 \
    fastify@5 @fastify/multipart@10 prom-client@15 bullmq@5 >/dev/null)
mkdir -p "$root/.device"
tar -C "$stage" -cJf "$root/.device/modules.tar.xz" node_modules
# The fixtures the GPU tests compare against, compressed.
fixtures="$root/test/fixtures"
[ -f "$root/.device/fixtures.tar.xz" ] || tar -C "$fixtures" -cJf "$root/.device/fixtures.tar.xz" manifest.json input-224.safetensors input-256x320.safetensors \
  $(cd "$fixtures" && ls *.weights.safetensors *.io.safetensors | grep -v timm)
rm -rf "$stage"
ls -la "$root/.device/"
