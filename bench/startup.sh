#!/usr/bin/env bash
# Time from launching `portcullis serve` to the first 200 from /readyz (and from /healthz, i.e. listening):
# first on a fresh data directory (migrations, first admin, keys), then again on the directory it left (a restart).
#   bench/startup.sh [N] [COMMAND...]
# N runs (default 5). COMMAND is what runs `portcullis`: by default the Release build through `dotnet`; give a
# published file (deploy/release.sh) to time that instead, e.g. bench/startup.sh 5 dist/portcullis-linux-x64.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
runs=${1:-5}
shift || true
if [ $# -eq 0 ]; then
    dotnet build -c Release src/Portcullis -v q -nologo >/dev/null
    set -- dotnet src/Portcullis/bin/Release/net10.0/portcullis.dll
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
start_once() {
    local dir=$1 start pid listening
    shift
    start=$(date +%s%N)
    PORTCULLIS_ADMIN_PASSWORD=startup-bench-password "$@" serve --data-dir "$dir" --urls "http://127.0.0.1:$port" >>"$dir/log" 2>&1 &
    pid=$!
    for _ in $(seq 1500); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.01; done
    listening=$(ms "$start")
    for _ in $(seq 1500); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break; sleep 0.01; done
    echo "listening after ${listening} ms, ready after $(ms "$start") ms"
    kill "$pid"; wait "$pid" 2>/dev/null || true
}
for i in $(seq "$runs"); do
    dir=$(mktemp -d)
    echo "run $i: fresh: $(start_once "$dir" "$@"); restart: $(start_once "$dir" "$@")"
    rm -rf "$dir"
done
