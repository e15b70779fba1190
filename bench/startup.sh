#!/usr/bin/env bash
# Time from process start to /readyz 200, and RSS, with an empty store and with a backlog.
#   bench/startup.sh target/release/sekoia-relay [N ...]     (default N: 0 100000 1000000)
# Seeds the store with examples/seed_store (cargo build --release --example seed_store).
set -eu
bin=$(realpath "${1:?relay binary}"); shift
sizes=${*:-0 100000 1000000}
here=$(cd "$(dirname "$0")/.." && pwd)
seed="$here/target/release/examples/seed_store"
[ -x "$seed" ] || (cd "$here" && cargo build -q --release --example seed_store)
port=${RPORT:-18100}
for n in $sizes; do
  work=$(mktemp -d /tmp/startup.XXXX)
  cat > "$work/config.toml" <<CFG
[server]
listen = "127.0.0.1:$port"
log_format = "json"
[sekoia]
api_key = ""
[store]
path = "$work/relay.db"
[targets.sink]
kind = "webhook"
url = "http://127.0.0.1:9/closed"     # nothing listens: the backlog stays pending
[[hooks]]
name = "bench"
id = "67a7472b-b43c-415d-b1ce-c135fb1dfb0e"
targets = ["sink"]
CFG
  [ "$n" -gt 0 ] && "$seed" "$work/relay.db" "$n" sink > /dev/null
  t0=$(date +%s%N)
  RUST_LOG=error "$bin" --config "$work/config.toml" serve > /dev/null 2>&1 &
  pid=$!
  until curl -sf -o /dev/null "http://127.0.0.1:$port/readyz"; do sleep 0.002; done
  t1=$(date +%s%N)
  sleep 3
  rss=$(awk '/VmRSS/{printf "%.1f", $2/1024}' /proc/$pid/status)
  kill $pid; wait $pid 2>/dev/null || true
  echo "pending=$n ready_ms=$(( (t1 - t0) / 1000000 )) rss_after_3s_mb=$rss db_mb=$(du -m "$work/relay.db" | cut -f1)"
  rm -rf "$work"
done
