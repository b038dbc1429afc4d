#!/usr/bin/env bash
# Everything issue #7 needs from a GPU, in one run on the accelerator machine:
#   1. our cuDNN/cuBLASLt declarations checked against the real headers (scripts/device/check_api.cc)
#   2. the addon built with the CUDA backend (oneDNN is not there: CPU backend off)
#   3. the GPU tests (test/cuda.test.ts: every fixture, fp32/bf16/fp16)
#   4. the benchmark against PyTorch on the same card (bench/cuda_torch.py, bench/cuda.ts)
#   5. the HTTP service's load test with dynamic batching on the GPU (bench/serve.ts)
# Prepare on a development machine, then run through the device tool with carry [".device", "dist"]:
#   bash ../shared/device/pack-node.sh && bash scripts/device/pack-modules.sh && npx tsc -p .
#   run: bash scripts/device-check.sh
# Logs go to $OUT (or ./device-out); the short table comes last.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/device-out}
mkdir -p "$OUT"
step() { echo "== $1 ($(date +%T))"; }

step "unpack node and modules"
tar -xJf .device/node.tar.xz -C /tmp && export PATH=/tmp/node/bin:$PATH
tar -xJf .device/modules.tar.xz
mkdir -p /tmp/fixtures && tar -xJf .device/fixtures.tar.xz -C /tmp/fixtures
export VGGNET_FIXTURES=/tmp/fixtures
node --version
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"

PY=python3
# The real headers, from the Python packages: nvidia/cudnn/include, nvidia/cu13/include.
INC=$($PY -c 'import glob,nvidia; print(" ".join(sorted({"-I"+p.rsplit("/",1)[0]
  for d in nvidia.__path__ for h in ("cudnn.h","cublasLt.h","cuda_runtime_api.h")
  for p in glob.glob(d+"/*/include/"+h)})))')
echo "headers: $INC"

step "1. API table against the real headers"
api=FAIL
if g++ -std=c++17 $INC -I/usr/local/cuda/include scripts/device/check_api.cc -o /tmp/check_api >"$OUT/check_api.log" 2>&1 && /tmp/check_api >>"$OUT/check_api.log" 2>&1; then
  api=ok
fi
tail -30 "$OUT/check_api.log"

step "2. build (CUDA on, oneDNN off)"
build=FAIL
if cmake -S . -B build -G Ninja -DVGGNET_WITH_ONEDNN=OFF -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_JS_INC="$PWD/node_modules/node-api-headers/include" -DCMAKE_LIBRARY_OUTPUT_DIRECTORY="$PWD/build/Release" \
    -DCMAKE_CXX_FLAGS=-DBUILDING_NODE_EXTENSION >"$OUT/build.log" 2>&1 && timeout 300 cmake --build build -j 16 >>"$OUT/build.log" 2>&1; then
  build=ok
fi
tail -5 "$OUT/build.log"
node -e "require('./dist/lib').cudaStatus().then((s) => console.log(JSON.stringify(s, null, 1)))" 2>&1 | tee "$OUT/status.json"

step "3. GPU tests"
timeout 200 node node_modules/mocha/bin/mocha.js --no-config --timeout 60000 dist/test/cuda.test.js 2>&1 | tee "$OUT/tests.log" | tail -60
tests=$(grep -Eo '[0-9]+ passing|[0-9]+ failing|[0-9]+ pending' "$OUT/tests.log" | tr '\n' ' ')

step "4. benchmark against PyTorch"
timeout 130 $PY bench/cuda_torch.py /tmp/vgg16.safetensors "$OUT/torch.json" 2>&1 | tee "$OUT/bench.log"
VGGNET_DEBUG=1 timeout 100 node dist/bench/cuda.js /tmp/vgg16.safetensors "$OUT/torch.json" 2>&1 | tee -a "$OUT/bench.log" | tail -12

step "5. HTTP service under load (bench/serve.ts)"
timeout 150 node dist/bench/serve.js --device cuda --precision bf16 --duration 5 2>&1 | tee "$OUT/serve.log" | tail -12

step "summary"
echo "api check: $api | build: $build | tests: $tests"
grep '^|' "$OUT/bench.log" || echo "benchmark: no table (see bench.log)"
