# Node test dependencies and a browser: the official socket.io-client and playwright-core
# from npm (pinned in tests/node/package.json + package-lock.json, `npm ci` into
# tests/node/node_modules with the npm cache under $SB_CACHE/npm), and Debian's chromium.
# No long-running process: `start` only checks that both work, and writes no PID file.
#
# Exports SWITCHBOARD_TEST_NODE_MODULES (absolute path) and SWITCHBOARD_TEST_CHROMIUM.

NODE_DIR="$SB_REPO/tests/node"
NODE_CHROMIUM=/usr/bin/chromium

node_install() {
    sb_apt chromium || return 1
    command -v node >/dev/null && command -v npm >/dev/null || sb_apt nodejs npm || return 1
    local major
    major="$(node -p 'process.versions.node.split(".")[0]')"
    [ "$major" -ge 20 ] 2>/dev/null ||
        { sb_log "node: Node $(node --version) is too old, playwright-core needs >= 20"; return 1; }
    local stamp="$NODE_DIR/node_modules/.switchboard-installed" want
    want="$(cat "$NODE_DIR/package-lock.json" "$NODE_DIR/package.json" | sha256sum | cut -d' ' -f1) $(node --version)"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then return 0; fi
    (
        cd "$NODE_DIR" &&
        npm ci --cache "$SB_CACHE/npm" --prefer-offline --ignore-scripts --no-audit --no-fund
    ) >>"$SB_LOGS/node.log" 2>&1 || return 1
    echo "$want" > "$stamp"
}

node_start() {
    local out
    out="$(cd "$NODE_DIR" && node -e "
        const io = require('socket.io-client');
        const pw = require('playwright-core');
        if (typeof io.io !== 'function' || typeof pw.chromium.launch !== 'function') process.exit(1);
        console.log('socket.io-client ' + require('socket.io-client/package.json').version +
            ', playwright-core ' + require('playwright-core/package.json').version);
    " 2>&1)" || { echo "$out" >>"$SB_LOGS/node.log"; sb_log "node: cannot load socket.io-client/playwright-core"; return 1; }
    echo "$out" >>"$SB_LOGS/node.log"
    out="$("$NODE_CHROMIUM" --version 2>&1)" || { echo "$out" >>"$SB_LOGS/node.log"; sb_log "node: $NODE_CHROMIUM --version failed"; return 1; }
    echo "$out" >>"$SB_LOGS/node.log"
    # playwright-core really drives this Chromium (headless, closed again before returning).
    (cd "$NODE_DIR" && timeout 60 node -e "
        const { chromium } = require('playwright-core');
        (async () => {
            const browser = await chromium.launch({ executablePath: '$NODE_CHROMIUM', headless: true });
            try {
                const page = await browser.newPage();
                await page.setContent('<p id=probe>switchboard</p>');
                if ((await page.textContent('#probe')) !== 'switchboard') throw new Error('page did not render');
                console.log('playwright-core drove Chromium ' + browser.version());
            } finally {
                await browser.close();
            }
        })().catch((e) => { console.error(e); process.exit(1); });
    ") >>"$SB_LOGS/node.log" 2>&1 || { sb_log "node: playwright-core could not drive $NODE_CHROMIUM"; return 1; }
    sb_export SWITCHBOARD_TEST_NODE_MODULES "$NODE_DIR/node_modules"
    sb_export SWITCHBOARD_TEST_CHROMIUM "$NODE_CHROMIUM"
}
