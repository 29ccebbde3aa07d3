# Shared helpers for the test environment. Sourced by envctl and by every
# component file in components/. Nothing here starts a process by itself.
#
# Layout
#   cache  ${SB_CACHE}            binaries, jars, Go builds (outside the repo, kept between runs)
#   state  ${SB_STATE}            per-checkout run state: data dirs, PID files, logs, env file
#   env    ${SB_STATE}/env        `export VAR=value` lines for every endpoint
#   logs   ${SB_STATE}/logs/NAME.log

set -o pipefail

SB_ENV_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SB_REPO="$(cd "$SB_ENV_DIR/../.." && pwd)"
SB_CACHE="${SWITCHBOARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/switchboard}"
SB_STATE="${SWITCHBOARD_TEST_STATE:-$SB_REPO/tests/.state}"
SB_LOGS="$SB_STATE/logs"
SB_ENV_FILE="$SB_STATE/env"

# Pinned versions of every component.
# shellcheck source=versions.env
source "$SB_ENV_DIR/versions.env"

mkdir -p "$SB_CACHE" "$SB_STATE" "$SB_LOGS"

sb_log() { printf '[env] %s\n' "$*" >&2; }

# sb_fail COMPONENT MESSAGE: say what failed and where its log is, then stop.
sb_fail() {
    local name="$1"; shift
    printf '[env] FAILED %s: %s (log: %s)\n' "$name" "$*" "$SB_LOGS/$name.log" >&2
    if [ -f "$SB_LOGS/$name.log" ]; then
        tail -n 20 "$SB_LOGS/$name.log" | sed 's/^/[env]   | /' >&2
    fi
    return 1
}

# sb_free_port: a TCP port that nothing listens on right now, on loopback.
sb_free_port() {
    python3 - <<'PY'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
}

# sb_wait_port PORT [SECONDS] [ADDR]: wait until ADDR:PORT (127.0.0.1) accepts connections.
sb_wait_port() {
    local port="$1" limit="${2:-60}" addr="${3:-127.0.0.1}" i=0
    while [ "$i" -lt $((limit * 10)) ]; do
        if (exec 3<>"/dev/tcp/$addr/$port") 2>/dev/null; then return 0; fi
        sleep 0.1; i=$((i + 1))
    done
    return 1
}

# sb_spawn NAME CMD...: start CMD in the background with its output in the
# component's log and its PID in $SB_STATE/NAME.pid.
sb_spawn() {
    local name="$1"; shift
    mkdir -p "$SB_STATE/$name"
    setsid "$@" >>"$SB_LOGS/$name.log" 2>&1 < /dev/null &
    echo $! > "$SB_STATE/$name.pid"
}

# sb_alive NAME: the component's recorded process is still running.
sb_alive() {
    local pidfile="$SB_STATE/$1.pid"
    [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

# sb_stop NAME: stop the process recorded in NAME.pid (and its process group), by PID only.
sb_stop() {
    local name="$1" pidfile="$SB_STATE/$1.pid" pid i
    [ -f "$pidfile" ] || return 0
    pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
        for i in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
        fi
    fi
    rm -f "$pidfile"
}

# sb_export VAR VALUE: record an endpoint in the env file (replacing an older line).
sb_export() {
    local var="$1" value="$2"
    touch "$SB_ENV_FILE"
    grep -v "^export $var=" "$SB_ENV_FILE" > "$SB_ENV_FILE.tmp" || true
    printf 'export %s=%q\n' "$var" "$value" >> "$SB_ENV_FILE.tmp"
    mv "$SB_ENV_FILE.tmp" "$SB_ENV_FILE"
    export "$var=$value"
}

# sb_apt PKG...: install Debian packages that are missing (apt-get update once per run).
sb_apt() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    # One apt at a time: `envctl install` may run beside an `envctl up` (tests/run-all),
    # and dpkg refuses a second writer instead of waiting.
    local lock
    exec {lock}>"$SB_CACHE/.apt.lock"
    flock "$lock"
    sb_apt_locked "${missing[@]}"
    local rc=$?
    exec {lock}>&-
    return $rc
}

# sb_apt_locked PKG...: sb_apt's work, under its lock.
sb_apt_locked() {
    local missing=() p
    # Installed by the holder of the lock before us?
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ ! -f "$SB_STATE/.apt-updated" ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$SB_LOGS/apt.log" 2>&1 || return 1
        touch "$SB_STATE/.apt-updated"
    fi
    # Packages with a system service (redis-server, coturn) must not start it: components
    # run their own instance. policy-rc.d 101 = "do not start"; an existing one is kept.
    local policy=/usr/sbin/policy-rc.d own_policy="" rc=0
    if [ ! -e "$policy" ] && [ -w /usr/sbin ]; then
        printf '#!/bin/sh\n# switchboard tests/env: installing packages, no service starts\nexit 101\n' > "$policy" &&
            chmod 755 "$policy" && own_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$SB_LOGS/apt.log" 2>&1 || rc=$?
    [ -n "$own_policy" ] && rm -f "$policy"
    return $rc
}

# The one Go module most tools are built in (go/go.mod, generated by go/merge from the
# wrappers that pin each tool), and the key of what it resolves to: binaries built in it
# are cached under paths that carry this key, so a changed dependency rebuilds them.
SB_GO_TOOLS="$SB_ENV_DIR/go"
SB_GO_TOOLS_KEY="$(cat "$SB_GO_TOOLS/go.mod" "$SB_GO_TOOLS/go.sum" | sha256sum | cut -c1-12)"

# sb_go_tools_fresh: go/go.mod was generated from the wrappers as they are now.
sb_go_tools_fresh() {
    local want
    want="$(cd "$SB_ENV_DIR" && cat kube/go.mod kwok/go.mod helm/go.mod containerd/go.mod crictl/go.mod coredns/go.mod prometheus/go.mod | sha256sum | cut -c1-16)"
    grep -qx "// inputs $want" "$SB_GO_TOOLS/go.mod" ||
        { sb_log "tests/env/go/go.mod is stale: a wrapper's go.mod changed; run tests/env/go/merge"; return 1; }
}

# sb_go_build NAME OUT MODULE_DIR PKG [LDFLAGS] [TAGS]: `go build` PKG inside MODULE_DIR into
# OUT unless OUT already exists. Go's caches live under $SB_CACHE/go so CI reuses them.
# CGO_ENABLED=1 in the caller's environment builds with cgo (runc needs libseccomp).
sb_go_build() {
    local name="$1" out="$2" dir="$3" pkg="$4" ldflags="${5:-}" tags="${6:-}"
    [ -x "$out" ] && return 0
    if [ "$dir" = "$SB_GO_TOOLS" ]; then sb_go_tools_fresh || return 1; fi
    mkdir -p "$(dirname "$out")"
    (
        cd "$dir" &&
        GOPATH="$SB_CACHE/go" GOMODCACHE="$SB_CACHE/go/pkg/mod" GOCACHE="$SB_CACHE/go/build-cache" \
        GOFLAGS=-mod=mod CGO_ENABLED="${CGO_ENABLED:-0}" \
        go build -trimpath -tags "$tags" -ldflags "$ldflags" -o "$out.tmp" "$pkg"
    ) >>"$SB_LOGS/$name.log" 2>&1 && mv "$out.tmp" "$out"
}

# sb_app_version: the chart's appVersion, the tag of every image the project builds.
sb_app_version() {
    sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$SB_REPO/charts/switchboard/Chart.yaml"
}

# sb_go_mod_dir MODULE_DIR MODULE: where the Go module cache holds MODULE at the version
# MODULE_DIR's go.mod requires (downloading it if needed).
sb_go_mod_dir() {
    (cd "$1" && GOPATH="$SB_CACHE/go" GOMODCACHE="$SB_CACHE/go/pkg/mod" GOFLAGS=-mod=mod \
        go list -m -f '{{.Dir}}' "$2")
}
