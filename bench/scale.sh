#!/usr/bin/env bash
# Verification throughput with many tokens in the database, and memory bounded by the cache .
#   bench/scale.sh [SECONDS]
# Runs, each on a fresh SQLite data directory with the same 1,000 tokens in use:
#   1. 1,000 tokens in the database;  2. 1,000,000 tokens in the database;
# and then, for memory, 1,000,000 in the database with 50,000 distinct tokens in use against a cache of
# 20,000 entries (Tokens:CacheSize), reporting the server's RSS, the cache's size, and how long the server
# took from launch to ready (it reads every token's digest at start: Tokens/TokenCache.cs).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
seconds=${1:-10}
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
dotnet build -c Release src/Portcullis -v q -nologo >/dev/null
dll=src/Portcullis/bin/Release/net10.0/portcullis.dll
work=$(mktemp -d)
pid=
trap '[ -n "$pid" ] && kill $pid 2>/dev/null; rm -rf "$work"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start() { # dir port [extra settings as env]
    PORTCULLIS_ADMIN_PASSWORD=scale-bench-password PORTCULLIS_Logging__LogLevel__Default=Warning \
        dotnet "$dll" serve --data-dir "$1" --urls "http://127.0.0.1:$2" >"$1.log" 2>&1 &
    pid=$!
    local began=$EPOCHREALTIME
    for _ in $(seq 3000); do
        if curl -sf "http://127.0.0.1:$2/readyz" >/dev/null 2>&1; then
            started=$(python3 -c "print(f'{$EPOCHREALTIME - $began:.2f}')")
            return
        fi
        sleep 0.01
    done
    echo "server did not start" >&2; cat "$1.log" >&2; exit 1
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=; }

lua() { # tokens-file
    cat <<LUA
local tokens = {}
for line in io.lines("$1") do tokens[#tokens + 1] = line end
local i = 0
request = function()
    i = i + 1
    return wrk.format("GET", "/api/v1/me", { ["Authorization"] = "Bearer " .. tokens[(i * 7919) % #tokens + 1] })
end
LUA
}

scenario() { # name total used [cache size]
    local dir=$work/$1 port
    port=$(free_port)
    start "$dir" "$port"; stop           # creates the schema and the admin
    python3 bench/scale_seed.py "$dir/portcullis.db" "$2" "$3" "$work/$1.tokens" >/dev/null
    ${4:+export PORTCULLIS_Tokens__CacheSize=$4}
    start "$dir" "$port"
    unset PORTCULLIS_Tokens__CacheSize
    lua "$work/$1.tokens" >"$work/$1.lua"
    wrk -t2 -c16 -d3s -s "$work/$1.lua" "http://127.0.0.1:$port" >/dev/null    # warm-up: fills the cache
    local ready=$started out rps p99 rss hwm entries
    out=$(wrk -t2 -c16 -d"${seconds}s" --latency -s "$work/$1.lua" "http://127.0.0.1:$port")
    if grep -q "Non-2xx" <<<"$out"; then echo "$1: errors: $(grep Non-2xx <<<"$out")" >&2; exit 1; fi
    rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
    hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$pid/status")
    entries=$(curl -s "http://127.0.0.1:$port/metrics" | awk '/^portcullis_token_cache_entries/ {print $2}')
    printf '%-28s %10s req/s  p99 %-8s RSS %6d MiB  peak %6d MiB  cache entries %-6s ready after %s s\n' "$1" "$rps" "$p99" $((rss / 1024)) $((hwm / 1024)) "$entries" "$ready"
    echo "$1 $rps" >>"$work/results"
    stop
}

scenario "1k-in-db" 1000 1000
scenario "1m-in-db" 1000000 1000
scenario "1m-in-db-50k-used-cache-20k" 1000000 50000 20000
python3 - "$work/results" <<'PY'
import sys
r = dict(l.split() for l in open(sys.argv[1]))
print(f"\n1,000,000 vs 1,000 tokens in the database: {float(r['1m-in-db']) / float(r['1k-in-db']):.2f}x (target >= 0.95)")
PY
