#!/usr/bin/env bash
# .ci/consumer.sh [--from-source]: a new app in a temp folder installs the tarballs in packages/
# (npm run package) as a user would, with the node and npm first on the PATH.
#   default        vggnet and its platform package, every compiler (cc gcc g++ c++ cmake make
#                  nvcc) a script that fails and LD_LIBRARY_PATH unset: the install takes under
#                  60 s and prints no EBADENGINE; then require('vggnet') runs VGG16 with the
#                  prebuilt addon and its bundled libraries, `vgg extract` and a `vgg serve` request
#   --from-source  vggnet without optional dependencies: the loader's one-line message, then the
#                  from-source build the README names, then the same model check
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
mode=${1:-prebuilt}
version=$(node -p "require('$repo/package.json').version")
fixtures=$(node -p "require('$repo/dist/test/helpers').FIXTURES")
app=$(mktemp -d "${TMPDIR:-/tmp}/vggnet-app-XXXXXX")
server=
cleanup() { [ -z "$server" ] || kill "$server" 2>/dev/null || true; rm -rf "$app"; }
trap cleanup EXIT
fail() { echo "consumer ($(node --version), $mode): $*" >&2; exit 1; }
cd "$app"
echo '{ "name": "app", "version": "1.0.0", "private": true }' > package.json
npm_install() { npm install --no-audit --no-fund --prefer-offline "$@" > install.log 2>&1 || { cat install.log; fail "npm install failed"; }; }

if [ "$mode" = --from-source ]; then
  npm_install --omit=optional "$repo/packages/vggnet-$version.tgz"
  message=$(node -e "require('vggnet').loadModel('$fixtures/D.weights.safetensors').catch((e) => console.log(e.code, e.message))")
  echo "$message" | grep -q '^E_BACKEND .*npm explore vggnet -- npm run build:source$' || fail "no addon gave: $message"
  npm explore vggnet -- npm run build:source > build.log 2>&1 || { tail -30 build.log; fail "the from-source build failed"; }
  node "$repo/.ci/consumer-check.js" "$app" node_modules/vggnet/build/Release
  exit 0
fi

# vgg serve needs its optional peers from the app (fastify, @fastify/multipart, prom-client), at
# the versions this repository tests with.
serve_deps=$(node -p "const p = require('$repo/package.json');
  ['fastify', '@fastify/multipart', 'prom-client'].map((n) => n + '@' + p.devDependencies[n]).join(' ')")
mkdir no-compilers
for c in cc gcc g++ c++ cmake make nvcc; do
  printf '#!/bin/sh\necho "%s: compilers are disabled in this test" >&2\nexit 1\n' "$c" > "no-compilers/$c"
  chmod +x "no-compilers/$c"
done
export PATH="$app/no-compilers:$PATH"
unset LD_LIBRARY_PATH
start=$(date +%s%N)
# shellcheck disable=SC2086
npm_install "$repo/packages/vggnet-$version.tgz" "$repo/packages/vggnet-linux-x64-$version.tgz" $serve_deps
ms=$(( ($(date +%s%N) - start) / 1000000 ))
! grep -q EBADENGINE install.log || { cat install.log; fail "the install printed EBADENGINE"; }
[ "$ms" -lt 60000 ] || fail "the install took $ms ms (60 s at most)"
node "$repo/.ci/consumer-check.js" "$app" node_modules/@vggnet/linux-x64/lib

npx vgg extract "$repo/samples" --weights "$fixtures/D.weights.safetensors" --out features.jsonl --threads 2 2> extract.log \
  || { cat extract.log; fail "vgg extract failed"; }
rows=$(wc -l < features.jsonl)
[ "$rows" -eq "$(ls "$repo/samples" | wc -l)" ] || fail "vgg extract wrote $rows rows for $(ls "$repo/samples" | wc -l) samples"

npx vgg serve --weights "$fixtures/D.weights.safetensors" --port 0 --max-batch 1 --warmup 1 --threads 2 2> serve.log &
server=$!
node -e "
const fs = require('node:fs');
(async () => {
  let url;
  for (let i = 0; i < 600 && !url; i++, await new Promise((r) => setTimeout(r, 100))) {
    url = /listening on (\S+)/.exec(fs.readFileSync('serve.log', 'utf8'))?.[1];
  }
  if (!url) throw new Error('vgg serve did not listen: ' + fs.readFileSync('serve.log', 'utf8'));
  while ((await fetch(url + '/readyz')).status !== 200) await new Promise((r) => setTimeout(r, 100));
  const res = await fetch(url + '/v1/classify?top=1', { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: fs.readFileSync('$repo/samples/coffee.jpg') });
  const body = await res.json();
  if (res.status !== 200 || body.classes?.length !== 1) throw new Error('POST /v1/classify: ' + res.status + ' ' + JSON.stringify(body));
})().catch((e) => { console.error(e.message); process.exit(1); });
" || fail "vgg serve: no answer"
kill "$server"
wait "$server" 2>/dev/null || true
server=
echo "consumer ($(node --version)): installed in $ms ms with every compiler failing; vgg extract wrote $rows rows; vgg serve answered"
