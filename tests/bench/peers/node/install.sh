#!/usr/bin/env bash
# Install the Node.js benchmark peer's pinned dependencies (package-lock.json) into
# tests/bench/peers/node/node_modules with `npm ci`, npm cache under
# ${XDG_CACHE_HOME:-$HOME/.cache}/switchboard/npm. Idempotent: when the lock file,
# package.json and Node version are those of the last install, it returns at once.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/switchboard/npm"

command -v node >/dev/null && command -v npm >/dev/null ||
    { echo "install.sh: node and npm are required (Node >= 20)" >&2; exit 1; }
major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$major" -ge 20 ] ||
    { echo "install.sh: Node $(node --version) is too old, need >= 20" >&2; exit 1; }

cd "$here"
stamp="node_modules/.switchboard-installed"
want="$(node -e '
    const fs = require("fs"), crypto = require("crypto");
    const h = crypto.createHash("sha256");
    for (const f of ["package-lock.json", "package.json"]) h.update(fs.readFileSync(f));
    console.log(h.digest("hex") + " " + process.version);
')"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "bench peer (node): dependencies up to date"
    exit 0
fi
mkdir -p "$cache"
npm ci --cache "$cache" --prefer-offline --ignore-scripts --no-audit --no-fund
echo "$want" > "$stamp"
echo "bench peer (node): dependencies installed"
