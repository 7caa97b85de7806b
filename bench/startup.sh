#!/usr/bin/env bash
# Time from launching `portcullis serve` on a fresh data directory to the first 200 from /readyz
# (and from /healthz, i.e. listening). Release build; N runs (default 5).
#   bench/startup.sh [N]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
runs=${1:-5}
dotnet build -c Release src/Portcullis -v q -nologo >/dev/null
dll=src/Portcullis/bin/Release/net10.0/portcullis.dll
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
for i in $(seq "$runs"); do
    dir=$(mktemp -d)
    start=$(date +%s%N)
    PORTCULLIS_ADMIN_PASSWORD=startup-bench-password dotnet "$dll" serve --data-dir "$dir" --urls "http://127.0.0.1:$port" >"$dir/log" 2>&1 &
    pid=$!
    for _ in $(seq 1500); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.01; done
    listening=$(ms "$start")
    for _ in $(seq 1500); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.01; done
    echo "run $i: listening after ${listening} ms, ready after $(ms "$start") ms"
    kill "$pid"; wait "$pid" 2>/dev/null || true
    rm -rf "$dir"
done
