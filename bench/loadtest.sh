#!/usr/bin/env bash
# Side-by-side load measurement of the relay against fast nginx mocks of the alert API and
# a Teams webhook, on loopback. Adapted from the project's shared load-test kit; needs the
# Debian packages nginx-light and wrk (and python3). See docs/benchmarks.md.
#
#   bench/loadtest.sh relay target/release/sekoia-relay   the relay (release build)
#   bench/loadtest.sh nginx                               nginx answering 202 itself: the ceiling
# Env: DUR (wrk seconds, default 10), CONN (connections, default 32, split over the replicas).
#   STORE_URL=postgres://…/DB   use that PostgreSQL server (a fresh database per run is
#                               created next to DB and dropped after) instead of SQLite
#   REPLICAS=N                  N relays on the one PostgreSQL store, each loaded by its own
#                               wrk at the same time (needs STORE_URL)
# Prints one line: name accepted_rps p50 p99 delivered/accepted e2e_rps rss_mb (peak of any
# replica), idle_rss_mb, and the relays' CPU time (user+sys, all replicas) per delivered event.
set -u
here=$(cd "$(dirname "$0")" && pwd)
kind=${1:?kind}; bin=${2:-}
[ -n "$bin" ] && bin=$(realpath "$bin")
DUR=${DUR:-10}; CONN=${CONN:-32}; REPLICAS=${REPLICAS:-1}; STORE_URL=${STORE_URL:-}
MPORT=${MPORT:-18081}; RPORT=${RPORT:-18000}; LPORT=${LPORT:-18082}
# The Alert API's list endpoint (a relay fetches the alerts of deliveries claimed together in
# one call): `cargo build --release --example bench_alert_list` first.
LIST_BIN=${LIST_BIN:-$here/../target/release/examples/bench_alert_list}
if [ "$kind" = relay ] && [ ! -x "$LIST_BIN" ]; then
  echo "missing $LIST_BIN: cargo build --release --example bench_alert_list"; exit 2
fi
if [ "$REPLICAS" -gt 1 ] && [ -z "$STORE_URL" ]; then echo "REPLICAS > 1 needs STORE_URL"; exit 2; fi
work=$(mktemp -d /tmp/bench.XXXX)
tr -d '\n' < "${ALERT:-$here/alert-min.json}" > "$work/alert.json"
alert=$(sed "s/'/\\\\'/g" "$work/alert.json")
sed -e "s#@DIR@#$work#g" -e "s#@PORT@#$MPORT#g" -e "s#@LPORT@#$LPORT#g" "$here/mock-nginx.conf.tpl" > "$work/nginx.conf"
python3 - "$work/nginx.conf" "$alert" <<'PY'
import sys; p=sys.argv[1]; s=open(p).read().replace('@ALERT@', sys.argv[2]); open(p,'w').write(s)
PY
touch "$work/sink.log"
nginx -c "$work/nginx.conf" -p "$work" || { echo "nginx failed"; exit 1; }
list_pid=""
if [ "$kind" = relay ]; then
  "$LIST_BIN" "$LPORT" "$work/alert.json" > "$work/list.log" 2>&1 &
  list_pid=$!
fi
pids=()
db_url=""
cleanup() {
  for p in "${pids[@]}" $list_pid; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  kill "$(cat "$work/nginx.pid")" 2>/dev/null
  if [ -n "$db_url" ]; then psql -q "$STORE_URL" -c "DROP DATABASE IF EXISTS $db_name" >/dev/null 2>&1; fi
}
trap cleanup EXIT
hook=67a7472b-b43c-415d-b1ce-c135fb1dfb0e
if [ -n "$STORE_URL" ] && [ "$kind" = relay ]; then
  db_name="bench_$$"
  psql -q "$STORE_URL" -c "CREATE DATABASE $db_name" >/dev/null || { echo "cannot create $db_name"; exit 1; }
  db_url="${STORE_URL%/*}/$db_name"
fi
ports=()
case "$kind" in
  nginx) urls=("http://127.0.0.1:$MPORT/ack") ;;
  relay)
    urls=()
    for i in $(seq 0 $((REPLICAS - 1))); do
      port=$((RPORT + i)); ports+=("$port")
      sed -e "s#@MPORT@#$MPORT#g" -e "s#@RPORT@#$port#g" -e "s#@DIR@#$work/r$i#g" "$here/relay-config.toml.tpl" > "$work/config$i.toml"
      [ -n "$db_url" ] && sed -i "s#^\[store\]#[store]\nurl = \"$db_url\"#; s#^path = .*#path = \"data/relay.db\"#" "$work/config$i.toml"
      (cd "$work" && RUST_LOG=warn SEKOIA_API_KEY=k exec "$bin" --config "$work/config$i.toml" serve) >"$work/cand$i.log" 2>&1 &
      pids+=($!); urls+=("http://127.0.0.1:$port/hooks/$hook")
    done ;;
  *) echo "unknown kind"; exit 2 ;;
esac
for port in "${ports[@]}"; do
  for i in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
done
cpu_of() { local n=0; for p in "${pids[@]}"; do n=$((n + $(awk '{print $14+$15}' /proc/$p/stat))); done; echo $n; }
rss_max() { local m=0 r; for p in "${pids[@]}"; do r=$(awk "/$1/{print \$2}" /proc/$p/status 2>/dev/null); [ "${r:-0}" -gt "$m" ] && m=$r; done; awk -v m="$m" 'BEGIN{printf "%.1f", m/1024}'; }
accepted_metric() { local n=0; for port in "${ports[@]}"; do n=$((n + $(curl -s "http://127.0.0.1:$port/metrics" | awk '/^sekoia_relay_events_received_total/ && /outcome="accepted"/ {n += $2} END {printf "%d", n}'))); done; echo $n; }
idle_rss=0; cpu0=0
if [ ${#pids[@]} -gt 0 ]; then
  sleep 0.5
  idle_rss=$(rss_max VmRSS)
  cpu0=$(cpu_of)
fi
t0=$(date +%s.%N)
conn=$(( CONN / ${#urls[@]} ))
for i in "${!urls[@]}"; do
  wrk -t1 -c"$conn" -d"${DUR}s" --latency -s "$here/post.lua" "${urls[$i]}" -- "$i" > "$work/wrk$i.txt" 2>&1 &
  wrkpids[$i]=$!
done
wait "${wrkpids[@]}"
t1=$(date +%s.%N)
sum() { awk "$1" "$work"/wrk*.txt | awk '{n += $1} END {printf "%s", n + 0}'; }
total=$(sum '/requests in/{print $1}')
non2xx=$(sum '/Non-2xx/{print $NF}')
acc=$(python3 -c "print(int($total - $non2xx))")
# Latency: the worst of the wrk runs (each reports its own percentiles).
worst() { awk -v q="$1" '$1==q{v=$2; u=substr(v, length(v)-1); x=v+0; if (u=="us") x/=1000; else if (u=="ms") x=x; else if (substr(v,length(v))=="s") x*=1000; print x}' "$work"/wrk*.txt | sort -g | tail -1; }
p50="$(worst 50%)ms"; p99="$(worst 99%)ms"
rps=$(sum '/Requests\/sec/{print $2}')
rss=0; [ ${#pids[@]} -gt 0 ] && rss=$(rss_max VmHWM)
delivered=0; tend=$t1
if [ "$kind" != nginx ]; then
  last=-1; stall=0
  while :; do
    sleep 0.5
    delivered=$(wc -l < "$work/sink.log")
    [ "$delivered" -ge "$acc" ] && [ "$delivered" -ge "$(accepted_metric)" ] && break
    if [ "$delivered" = "$last" ]; then stall=$((stall+1)); [ $stall -ge 20 ] && break; else stall=0; fi
    last=$delivered
  done
  tend=$(date +%s.%N)
  rss=$(rss_max VmHWM)
fi
e2e=$(python3 -c "print(round($delivered/($tend-$t0),1))")
# The relays' own count of 202s (wrk does not count requests still in flight when it stops).
relay_acc=$acc
[ ${#ports[@]} -gt 0 ] && relay_acc=$(accepted_metric)
cpu_us=0
if [ ${#pids[@]} -gt 0 ] && [ "$delivered" -gt 0 ]; then
  cpu1=$(cpu_of)
  cpu_us=$(python3 -c "import os; print(round(($cpu1-$cpu0)/os.sysconf('SC_CLK_TCK')/$delivered*1e6,1))")
fi
store=sqlite; [ -n "$db_url" ] && store="postgres×$REPLICAS"
[ "$kind" = nginx ] && store=-
echo "$kind store=$store accepted_rps=$rps accepted=$acc non2xx=$non2xx p50=$p50 p99=$p99 relay_accepted=$relay_acc delivered=$delivered e2e_rps=$e2e rss_mb=$rss idle_rss_mb=$idle_rss cpu_us_per_event=$cpu_us"
if [ -n "${KEEP:-}" ]; then echo "workdir: $work"; fi
