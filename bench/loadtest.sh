#!/usr/bin/env bash
# Side-by-side load measurement of the relay against fast nginx mocks of the alert API and
# a Teams webhook, on loopback. Adapted from the project's shared load-test kit; needs the
# Debian packages nginx-light and wrk (and python3). See docs/benchmarks.md.
#
#   bench/loadtest.sh relay target/release/sekoia-relay   the relay (release build)
#   bench/loadtest.sh nginx                               nginx answering 202 itself: the ceiling
# Env: DUR (wrk seconds, default 10), CONN (connections, default 32).
# Prints one line: name accepted_rps p50 p99 delivered/accepted e2e_rps rss_mb (peak),
# idle_rss_mb, and the relay's CPU time per delivered event (user+sys).
set -u
here=$(cd "$(dirname "$0")" && pwd)
kind=${1:?kind}; bin=${2:-}
[ -n "$bin" ] && bin=$(realpath "$bin")
DUR=${DUR:-10}; CONN=${CONN:-32}
MPORT=${MPORT:-18081}; RPORT=${RPORT:-18000}
work=$(mktemp -d /tmp/bench.XXXX)
alert=$(tr -d '\n' < "${ALERT:-$here/alert-min.json}" | sed "s/'/\\\\'/g")
sed -e "s#@DIR@#$work#g" -e "s#@PORT@#$MPORT#g" "$here/mock-nginx.conf.tpl" > "$work/nginx.conf"
python3 - "$work/nginx.conf" "$alert" <<'PY'
import sys; p=sys.argv[1]; s=open(p).read().replace('@ALERT@', sys.argv[2]); open(p,'w').write(s)
PY
touch "$work/sink.log"
nginx -c "$work/nginx.conf" -p "$work" || { echo "nginx failed"; exit 1; }
cleanup() { [ -n "${cpid:-}" ] && kill "$cpid" 2>/dev/null; wait 2>/dev/null; kill "$(cat "$work/nginx.pid")" 2>/dev/null; }
trap cleanup EXIT
hook=67a7472b-b43c-415d-b1ce-c135fb1dfb0e
case "$kind" in
  nginx) url="http://127.0.0.1:$MPORT/ack" ;;
  relay)
    sed -e "s#@MPORT@#$MPORT#g" -e "s#@RPORT@#$RPORT#g" -e "s#@DIR@#$work#g" "$here/relay-config.toml.tpl" > "$work/config.toml"
    (cd "$work" && RUST_LOG=warn SEKOIA_API_KEY=k exec "$bin" --config "$work/config.toml" serve) >"$work/cand.log" 2>&1 &
    cpid=$!; url="http://127.0.0.1:$RPORT/hooks/$hook" ;;
  *) echo "unknown kind"; exit 2 ;;
esac
if [ -n "${cpid:-}" ]; then
  for i in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$RPORT/" && break; sleep 0.1; done
fi
idle_rss=0; cpu0=0
if [ -n "${cpid:-}" ]; then
  sleep 0.5
  idle_rss=$(awk '/VmRSS/{printf "%.1f", $2/1024}' /proc/$cpid/status 2>/dev/null)
  cpu0=$(awk '{print $14+$15}' /proc/$cpid/stat)
fi
t0=$(date +%s.%N)
wrk -t1 -c"$CONN" -d"${DUR}s" --latency -s "$here/post.lua" "$url" > "$work/wrk.txt" 2>&1
t1=$(date +%s.%N)
total=$(awk '/requests in/{print $1}' "$work/wrk.txt")
non2xx=$(awk '/Non-2xx/{print $NF}' "$work/wrk.txt"); non2xx=${non2xx:-0}
acc=$((total - non2xx))
p50=$(awk '$1=="50%"{print $2}' "$work/wrk.txt"); p99=$(awk '$1=="99%"{print $2}' "$work/wrk.txt")
rps=$(awk '/Requests\/sec/{print $2}' "$work/wrk.txt")
rss=0; [ -n "${cpid:-}" ] && rss=$(awk '/VmHWM/{printf "%.1f", $2/1024}' /proc/$cpid/status 2>/dev/null)
delivered=0; tend=$t1
if [ "$kind" != nginx ]; then
  last=-1; stall=0
  while :; do
    sleep 0.5
    delivered=$(wc -l < "$work/sink.log")
    [ "$delivered" -ge "$acc" ] && [ "$delivered" -ge "$(curl -s "http://127.0.0.1:$RPORT/metrics" | awk '/^sekoia_relay_events_received_total/ && /outcome="accepted"/ {n += $2} END {printf "%d", n}')" ] && break
    if [ "$delivered" = "$last" ]; then stall=$((stall+1)); [ $stall -ge 20 ] && break; else stall=0; fi
    last=$delivered
  done
  tend=$(date +%s.%N)
  r2=$(awk '/VmHWM/{printf "%.1f", $2/1024}' /proc/$cpid/status 2>/dev/null); rss=${r2:-$rss}
fi
e2e=$(python3 -c "print(round($delivered/($tend-$t0),1))")
# The relay's own count of 202s (wrk does not count requests still in flight when it stops).
relay_acc=$acc
if [ -n "${cpid:-}" ]; then
  relay_acc=$(curl -s "http://127.0.0.1:$RPORT/metrics" | awk '/^sekoia_relay_events_received_total/ && /outcome="accepted"/ {n += $2} END {printf "%d", n}')
fi
cpu_us=0
if [ -n "${cpid:-}" ] && [ "$delivered" -gt 0 ]; then
  cpu1=$(awk '{print $14+$15}' /proc/$cpid/stat)
  cpu_us=$(python3 -c "import os; print(round(($cpu1-$cpu0)/os.sysconf('SC_CLK_TCK')/$delivered*1e6,1))")
fi
echo "$kind accepted_rps=$rps accepted=$acc non2xx=$non2xx p50=$p50 p99=$p99 relay_accepted=$relay_acc delivered=$delivered e2e_rps=$e2e rss_mb=$rss idle_rss_mb=$idle_rss cpu_us_per_event=$cpu_us"
if [ -n "${KEEP:-}" ]; then echo "workdir: $work"; fi
