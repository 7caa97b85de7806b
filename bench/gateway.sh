#!/usr/bin/env bash
# The gateway and forward-auth side by side, in one run, interleaved :
#   direct      wrk -> upstream (nginx `return 200`)
#   nginx       wrk -> nginx proxy_pass (keepalive) -> upstream
#   gateway     wrk -> Portcullis /services/bench_1/ (valid token) -> upstream
#   replicas    wrk -> Portcullis /services/bench3_1/ (valid token) -> one of three upstreams (power of two choices)
#   nginx+pc    wrk -> nginx auth_request -> Portcullis /auth/verify, then -> upstream
#   nginx+stub  wrk -> nginx auth_request -> nginx stub answering 200, then -> upstream
#   bare        wrk -> bench/BareProxy: Kestrel + SocketsHttpHandler, no middleware, no checks -> upstream
#   bare-yarp   wrk -> bench/BareProxy on YARP's IHttpForwarder (default transform), no middleware, no checks -> upstream
#   nginx+bare  wrk -> nginx auth_request -> bench/BareProxy answering 200 (Kestrel, nothing else), then -> upstream
#   verify      wrk -> Portcullis /auth/verify alone
#   healthz     wrk -> Portcullis /healthz alone
# 1,000 distinct tokens, taken in turn; 5 s warm-up each; ROUNDS rounds of SECONDS each.
# The two bare rows are floors: what .NET itself costs on this machine, so that the ratios can be read as
# "the platform" and "what Portcullis adds on top of it".
#   bench/gateway.sh [SECONDS] [ROUNDS] [CONNECTIONS]
#   ROWS="bare gateway" bench/gateway.sh 5 2    # only some rows
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
seconds=${1:-10}
rounds=${2:-2}
connections=${3:-32}
for tool in wrk nginx; do command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || { echo "$tool is missing: apt-get install $tool" >&2; exit 1; }; done
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
dotnet build -c Release src/Portcullis -v q -nologo >/dev/null
dotnet build -c Release bench/BareProxy -v q -nologo >/dev/null
dll=src/Portcullis/bin/Release/net10.0/portcullis.dll
bare_dll=bench/BareProxy/bin/Release/net10.0/BareProxy.dll
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill $p 2>/dev/null; done; wait 2>/dev/null; rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
up=$(free_port); proxy=$(free_port); stub=$(free_port); fa_pc=$(free_port); fa_stub=$(free_port); pc=$(free_port)
bare=$(free_port); bare_yarp=$(free_port); bare_stub=$(free_port); fa_bare=$(free_port); up2=$(free_port); up3=$(free_port)

# Portcullis, with the upstream as a service and 1,000 tokens put in its database.
start_portcullis() {
    PORTCULLIS_ADMIN_PASSWORD=gateway-bench-password PORTCULLIS_Logging__LogLevel__Default=Warning \
    PORTCULLIS_Gateway__Services__0__Name=bench PORTCULLIS_Gateway__Services__0__Version=1 \
    PORTCULLIS_Gateway__Services__0__Upstream=http://127.0.0.1:$up \
    PORTCULLIS_Gateway__Services__1__Name=bench3 PORTCULLIS_Gateway__Services__1__Version=1 \
    PORTCULLIS_Gateway__Services__1__Upstreams__0=http://127.0.0.1:$up PORTCULLIS_Gateway__Services__1__Upstreams__1=http://127.0.0.1:$up2 \
    PORTCULLIS_Gateway__Services__1__Upstreams__2=http://127.0.0.1:$up3 \
        dotnet "$dll" serve --data-dir "$work/data" --urls "http://127.0.0.1:$pc" >"$work/portcullis.log" 2>&1 &
    pc_pid=$!
    for _ in $(seq 3000); do curl -sf "http://127.0.0.1:$pc/readyz" >/dev/null 2>&1 && return; sleep 0.01; done
    echo "Portcullis did not start" >&2; cat "$work/portcullis.log" >&2; exit 1
}
start_portcullis; kill "$pc_pid"; wait "$pc_pid" 2>/dev/null || true
python3 bench/scale_seed.py "$work/data/portcullis.db" 1000 1000 "$work/tokens" >/dev/null
start_portcullis; pids+=("$pc_pid")
dotnet "$bare_dll" "http://127.0.0.1:$bare" "http://127.0.0.1:$up" >"$work/bare.log" 2>&1 &
pids+=($!)
dotnet "$bare_dll" "http://127.0.0.1:$bare_yarp" "http://127.0.0.1:$up" yarp >"$work/bare-yarp.log" 2>&1 &
pids+=($!)
dotnet "$bare_dll" "http://127.0.0.1:$bare_stub" ok >"$work/bare-stub.log" 2>&1 &
pids+=($!)
for _ in $(seq 1000); do curl -sf "http://127.0.0.1:$bare_stub/" >/dev/null 2>&1 && break; sleep 0.01; done

# One nginx: the upstream, plain proxy_pass, the stub, and both auth_request set-ups (docs/examples/nginx-forward-auth.conf).
mkdir -p "$work/nginx"
forward_auth=$(sed -e "s/server 127.0.0.1:8080;/server 127.0.0.1:$pc;/" -e "s/server 127.0.0.1:5000;/server 127.0.0.1:$up;/" \
    -e "s/listen 127.0.0.1:8000;/listen 127.0.0.1:$fa_pc;/" -e "s/services=app/services=bench/" docs/examples/nginx-forward-auth.conf)
# The same auth_request set-up with another checker in Portcullis's place, answering 200 to everything.
#   stub_auth NAME CHECKER_PORT LISTEN_PORT
stub_auth() {
    sed -e "s/^upstream portcullis {/upstream $1 {/" -e "s/server 127.0.0.1:8080;/server 127.0.0.1:$2;/" \
        -e "/^upstream app {/,/^}/d" -e "s/listen 127.0.0.1:8000;/listen 127.0.0.1:$3;/" -e "s#http://portcullis/auth/verify?service=app#http://$1/#" \
        -e "s/_portcullis_verify/_$1_verify/g" docs/examples/nginx-forward-auth.conf
}
cat >"$work/nginx/nginx.conf" <<NGINX
$( [ "$(id -u)" = 0 ] && echo "user root;" )
worker_processes auto;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $work/nginx/body; proxy_temp_path $work/nginx/proxy;
    fastcgi_temp_path $work/nginx/fcgi; uwsgi_temp_path $work/nginx/uwsgi; scgi_temp_path $work/nginx/scgi;
    server { listen 127.0.0.1:$up; listen 127.0.0.1:$up2; listen 127.0.0.1:$up3; location / { return 200 "hello from the upstream\n"; } }
    server { listen 127.0.0.1:$stub; location / { return 200; } }
    server {
        listen 127.0.0.1:$proxy;
        location / { proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
$forward_auth
$(stub_auth nginx_stub_auth "$stub" "$fa_stub")
$(stub_auth bare_stub_auth "$bare_stub" "$fa_bare")
}
NGINX
"$nginx_bin" -p "$work/nginx" -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log" &
pids+=($!)
sleep 1

cat >"$work/tokens.lua" <<LUA
local tokens = {}
for line in io.lines("$work/tokens") do tokens[#tokens + 1] = line end
local i = 0
request = function()
    i = i + 1
    return wrk.format("GET", nil, { ["Authorization"] = "Bearer " .. tokens[(i * 7919) % #tokens + 1] })
end
LUA

declare -A urls=(
    [direct]="http://127.0.0.1:$up/" [nginx]="http://127.0.0.1:$proxy/" [gateway]="http://127.0.0.1:$pc/services/bench_1/" [replicas]="http://127.0.0.1:$pc/services/bench3_1/"
    ["nginx+pc"]="http://127.0.0.1:$fa_pc/" ["nginx+stub"]="http://127.0.0.1:$fa_stub/"
    [bare]="http://127.0.0.1:$bare/" [bare-yarp]="http://127.0.0.1:$bare_yarp/" ["nginx+bare"]="http://127.0.0.1:$fa_bare/"
    [verify]="http://127.0.0.1:$pc/auth/verify?service=bench" [healthz]="http://127.0.0.1:$pc/healthz")
order=(${ROWS:-direct nginx bare bare-yarp gateway replicas nginx+pc nginx+bare nginx+stub verify healthz})
for name in "${order[@]}"; do
    status=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $(head -n1 "$work/tokens")" "${urls[$name]}")
    [ "$status" = 200 ] || { echo "$name answers $status, not 200: ${urls[$name]}" >&2; cat "$work/nginx/error.log" >&2; exit 1; }
    wrk -t2 -c"$connections" -d5s -s "$work/tokens.lua" "${urls[$name]}" >/dev/null
done

: >"$work/results"
for round in $(seq "$rounds"); do
    for name in "${order[@]}"; do
        out=$(wrk -t2 -c"$connections" -d"${seconds}s" --latency -s "$work/tokens.lua" "${urls[$name]}")
        if grep -q "Non-2xx" <<<"$out"; then echo "$name: $(grep Non-2xx <<<"$out")" >&2; exit 1; fi
        echo "$name $round $(awk '/^Requests\/sec/ {print $2}' <<<"$out") $(awk '$1 == "99%" {print $2}' <<<"$out")" >>"$work/results"
    done
done
python3 - "$work/results" <<'PY'
import sys, statistics
rows = [l.split() for l in open(sys.argv[1])]
by = {}
for name, rnd, rps, p99 in rows:
    by.setdefault(name, []).append((float(rps), p99))
print(f"{'setup':<12} {'req/s (median)':>15}  p99 per round")
med = {}
for name, runs in by.items():
    med[name] = statistics.median(r for r, _ in runs)
    print(f"{name:<12} {med[name]:>15.0f}  {' '.join(p for _, p in runs)}")
def ratio(a, b, target):
    if a in med and b in med:  # ROWS may leave some out
        print(f"{a} / {b}: {med[a] / med[b]:.2f} (target >= {target})")
print()
ratio("gateway", "bare", 0.9)
ratio("nginx+pc", "nginx+bare", 0.95)
ratio("verify", "healthz", 0.95)
ratio("gateway", "nginx", 0.8)
ratio("replicas", "gateway", "-")
print("\nfloors (.NET itself; no target):")
ratio("bare", "nginx", "-")
ratio("bare-yarp", "bare", "-")
ratio("gateway", "bare-yarp", "-")
ratio("nginx+bare", "nginx+stub", "-")
ratio("nginx+pc", "nginx+stub", "-")
PY
