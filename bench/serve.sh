# Sourced by the benchmark scripts: builds Portcullis, starts `portcullis serve` on a free loopback port with a
# fresh data directory and the admin password $1, and waits until it is ready. Sets base, dir (removed on exit)
# and pid (stopped on exit).
dotnet build -c Release src/Portcullis -v q -nologo >/dev/null
dll=src/Portcullis/bin/Release/net10.0/portcullis.dll
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
dir=$(mktemp -d)
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
PORTCULLIS_ADMIN_PASSWORD="$1" PORTCULLIS_Logging__LogLevel__Default=Warning \
    dotnet "$dll" serve --data-dir "$dir/data" --urls "$base" >"$dir/log" 2>&1 &
pid=$!
for _ in $(seq 1500); do curl -sf "$base/readyz" >/dev/null 2>&1 && break; sleep 0.01; done
