#!/usr/bin/env bash
# Against reality: shoal-sim's predicted S3 requests must be within 5 % of what a real cluster does,
# with and without a failure.
#
#   1. A local S3 server (tests/s3rver) and a generated dataset, uploaded with the AWS CLI.
#   2. Four shoald on 127.0.0.1-4; every node reads every object once with `shoal get` (four readers
#      at once). The S3 server counts the GETs and HEADs it answered.
#        run "steady": no failure.
#        run "kill":   node 3's daemon is killed with SIGKILL once node 3 has read half the objects.
#   3. shoal-sim runs each workload: four nodes, the same object sizes and block size, every node
#      reading everything once through `shoal get` (--access get: each object's metadata from its
#      metadata owner, which HEADs it once).
#      Alignment: the simulated epoch lasts as long as the real reads took (the survivors' mean),
#      and the simulated kill comes at the same share of the epoch as the survivors' progress
#      when the real kill happened (objects they had read / objects). The prediction is the mean
#      over 5 seeds (which node dies and the network's draws vary with the seed).
#   4. In both runs the predicted GETs and HEADs must each be within 5 % of the real counts. A kill
#      costs no more S3 requests than the reads the dead node had in flight: until the views drop
#      it, a reader that meets the silent owner asks the stand-in owner (the next-ranked member),
#      which fetches once for every reader, so neither when the kill lands among the reads nor how
#      long detection takes moves the counts (docs/simulator.md, "Against reality").
#
# Usage: tests/sim/against_reality.sh SHOAL_SIM BIN_DIR
#   SHOAL_SIM  the simulator (build/sim/shoal-sim)
#   BIN_DIR    where shoald and shoal are built (build/node)
# Environment: REALITY_FILES (150), REALITY_BLOCK_SIZE (1M), REALITY_RUNS ("steady kill"),
#   REALITY_KEEP (keep the work directory), REALITY_LOG (the S3 server logs every request with the
#   node that sent it, into s3.log, each reader its completion times, and the daemons log at info).
# Exit 77 (skip) when node, the AWS CLI or the S3 server's modules are missing.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
sim=${1:-$root/build/sim/shoal-sim}
bindir=${2:-$root/build/node}
files=${REALITY_FILES:-150}
block=${REALITY_BLOCK_SIZE:-1M}
runs=${REALITY_RUNS:-steady kill}
py=/usr/bin/python3

for tool in node aws $py; do
  command -v "$tool" >/dev/null || { echo "against_reality: $tool is missing; skipped"; exit 77; }
done
[ -d "$root/tests/s3rver/node_modules" ] || { echo "against_reality: tests/s3rver has no node_modules; skipped"; exit 77; }
[ -x "$sim" ] || { echo "against_reality: no shoal-sim at $sim" >&2; exit 1; }
shoald=$bindir/shoald
shoal=$bindir/shoal
[ -x "$shoald" ] && [ -x "$shoal" ] || { echo "against_reality: no shoald and shoal in $bindir" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/shoal-reality.XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  [ -n "${REALITY_KEEP:-}" ] && echo "kept $work" || rm -rf "$work"
}
trap cleanup EXIT
now() { date +%s.%N; }
free_port() { $py -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

echo "== local S3 server and a dataset of $files objects (100 KB - 2 MB), ${block} blocks"
mkdir -p "$work/s3" "$work/data"
mkfifo "$work/s3.in"
NODE_OPTIONS=--openssl-legacy-provider SHOAL_S3_LOG=${REALITY_LOG:+$work/s3.log} \
  node "$root/tests/s3rver/start.js" --dir "$work/s3" --port 0 --bucket data ${REALITY_LOG:+--address 0.0.0.0} <"$work/s3.in" >"$work/s3.out" 2>"$work/s3.err" &
pids+=($!)
exec 9>"$work/s3.in"
for _ in $(seq 100); do grep -q '"port"' "$work/s3.out" 2>/dev/null && break; sleep 0.1; done
s3port=$(sed -n 's/.*"port":\([0-9]*\).*/\1/p' "$work/s3.out")
[ -n "$s3port" ] || { cat "$work/s3.err" >&2; echo "against_reality: the S3 server did not start" >&2; exit 1; }
endpoint=http://127.0.0.1:$s3port
export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1
unset AWS_PROFILE AWS_SESSION_TOKEN
$py - "$work/data" "$files" <<'EOF'
import os, random, sys
out, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(42)
for i in range(n):
    with open(os.path.join(out, "sample-%04d.bin" % i), "wb") as f:
        f.write(os.urandom(rng.randint(100 * 1024, 2 * 1024 * 1024)))
EOF
(cd "$work/data" && ls | sort >"$work/keys")
find "$work/data" -type f -printf '%s\n' >"$work/sizes"
aws --endpoint-url "$endpoint" s3 cp --recursive --quiet "$work/data" s3://data/train/
"$shoal" keygen -o "$work/cluster.key"
block_bytes=$($py -c "import sys; s=sys.argv[1]; m={'K':1<<10,'M':1<<20,'G':1<<30}; print(int(s[:-1])*m[s[-1].upper()] if s[-1].upper() in m else int(s))" "$block")
loglevel=${REALITY_LOG:+info}
loglevel=${loglevel:-warn}
# With REALITY_LOG, node i reaches the S3 server at 127.0.0.(i+1), so its request log says which
# node sent each request.
node_endpoint() { if [ -n "${REALITY_LOG:-}" ]; then echo "http://127.0.0.$(($1 + 1)):$s3port"; else echo "$endpoint"; fi; }
stats() { curl -s "$endpoint/_shoal/stats"; }

# cluster RUN: starts 4 daemons, has each read every object, kills node 3 at half way when RUN is
# "kill"; leaves real.json with the counts and the timing.
cluster() {
  local run=$1 dir=$work/$1 port
  port=$(free_port)
  mkdir -p "$dir"
  local dpids=()
  for i in 0 1 2 3; do
    local seeds=()
    [ "$i" -gt 0 ] && seeds=(--seeds "127.0.0.1:$port")
    mkdir -p "$dir/node$i"
    "$shoald" --node-id "node$i" --bind "127.0.0.$((i + 1)):$port" "${seeds[@]}" \
      --bucket s3://data --endpoint "$(node_endpoint "$i")" --path-style --region us-east-1 \
      --cache-dir "$dir/node$i/cache" --cache-size 2G --block-size "$block" \
      --cluster-key "$work/cluster.key" --control "$dir/node$i/shoald.sock" --metrics off --log-level "$loglevel" \
      2>"$dir/node$i/log" &
    dpids+=($!)
    pids+=($!)
  done
  for i in 0 1 2 3; do
    local n=0
    for _ in $(seq 150); do
      n=$("$shoal" --control "$dir/node$i/shoald.sock" status --json 2>/dev/null |
          $py -c 'import json,sys; print(sum(m["state"]=="alive" for m in json.load(sys.stdin)["members"]))' \
          2>/dev/null || echo 0)
      [ "$n" = 4 ] && break
      sleep 0.2
    done
    [ "$n" = 4 ] || { cat "$dir/node$i/log" >&2; echo "against_reality: node$i sees $n of 4 members" >&2; exit 1; }
  done
  curl -s -X POST "$endpoint/_shoal/stats/reset" >/dev/null
  local t0 readers=()
  t0=$(now)
  for i in 0 1 2 3; do
    : >"$dir/node$i/done" # exists before its reader starts, so the progress count below reads 0, not an error
    (
      while read -r key; do
        "$shoal" --control "$dir/node$i/shoald.sock" get "s3://data/train/$key" -o /dev/null 2>/dev/null || exit 0
        echo "$key"
        [ -z "${REALITY_LOG:-}" ] || echo "$(now) $key" >>"$dir/node$i/times"
      done <"$work/keys" >"$dir/node$i/done"
      now >"$dir/node$i/end"
    ) &
    readers+=($!)
  done
  local t_kill=0 progress=0
  if [ "$run" = kill ]; then
    # Node 3's daemon dies once node 3 has read half the objects: progress, not a clock, says when.
    while [ "$(wc -l <"$dir/node3/done")" -lt $((files / 2)) ]; do sleep 0.05; done
    kill -9 "${dpids[3]}"
    t_kill=$(now)
    { wait "${dpids[3]}"; } 2>/dev/null || true
    progress=$(cat "$dir"/node{0,1,2}/done | wc -l)
  fi
  for r in "${readers[@]}"; do wait "$r"; done
  for i in 0 1 2; do
    [ "$(wc -l <"$dir/node$i/done")" = "$files" ] || { tail "$dir/node$i/log" >&2; echo "against_reality: node$i read $(wc -l <"$dir/node$i/done") of $files" >&2; exit 1; }
  done
  stats >"$dir/s3.json"
  $py - "$dir" "$t0" "$t_kill" "$progress" "$files" <<'EOF'
import json, sys
d, t0, t_kill, progress, files = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
s3 = json.load(open(d + "/s3.json"))
ends = [float(open("%s/node%d/end" % (d, i)).read()) for i in range(3)]
read_s = sum(e - t0 for e in ends) / 3
json.dump({"gets": s3["gets"], "heads": s3["heads"], "read_s": read_s,
           "kill_frac": progress / (3.0 * files) if t_kill else 0,
           "kill_after_s": t_kill - t0 if t_kill else 0}, open(d + "/real.json", "w"))
EOF
  for i in 0 1 2 3; do kill "${dpids[$i]}" 2>/dev/null || true; wait "${dpids[$i]}" 2>/dev/null || true; done
}

fail=0
for run in $runs; do
  echo "== real cluster, run '$run'"
  cluster "$run"
  read -r gets heads read_s frac after < <($py -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["gets"], r["heads"], "%.3f" % r["read_s"], "%.6f" % r["kill_frac"], "%.2f" % r["kill_after_s"])' "$work/$run/real.json")
  echo "real: $gets GETs, $heads HEADs; reads took ${read_s} s$( [ "$run" = kill ] && echo "; node 3 killed after ${after} s, when the others had read $(/usr/bin/python3 -c "print('%.1f' % (100 * $frac))") % of the objects")"
  churn=()
  if [ "$run" = kill ]; then
    churn=(--churn "kill@$($py -c "print('%.3f' % (5 + $frac * $read_s))")")
  fi
  : >"$work/$run/seeds"
  for seed in 1 2 3 4 5; do
    "$sim" --nodes 4 --seed "$seed" --duration "$($py -c "print(int(5 + $read_s + 40))")" --no-plots \
      --out "$work/$run/sim$seed" --access get "${churn[@]}" \
      --workload "sizes=$work/sizes,block=$block_bytes,read=full,order=same,epochs=1,start=5,epoch-time=$read_s,cache=2GiB" \
      >"$work/$run/sim$seed.log"
    read -r g h < <($py -c 'import json,sys; s=json.load(open(sys.argv[1]))["systems"]["shoal"]; print(int(s["s3_gets"]), int(s["s3_heads"]))' "$work/$run/sim$seed/summary.json")
    echo "  seed $seed: $g GETs, $h HEADs"
    echo "$g $h" >>"$work/$run/seeds"
  done
  if ! $py - "$run" "$gets" "$heads" "$work/$run/seeds" <<'EOF'
import sys
run, rg, rh = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
seeds = [tuple(map(float, l.split())) for l in open(sys.argv[4]) if l.strip()]
ok = True
# Whatever the run, the outcome does not depend on timing: the mean must be within 5 %.
for what, real, sims in (("GETs", rg, [g for g, _ in seeds]), ("HEADs", rh, [h for _, h in seeds])):
    mean = sum(sims) / len(sims)
    err = abs(mean - real) / real
    print("%s: predicted %s %.1f (seeds %d-%d) against %d real: %.2f %% off (limit 5 %%)"
          % (run, what, mean, min(sims), max(sims), real, 100 * err))
    ok = ok and err <= 0.05
sys.exit(0 if ok else 1)
EOF
  then fail=1; fi
done
exit $fail
