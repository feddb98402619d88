#!/usr/bin/env bash
# Against reality: the simulator's predicted S3 request count for one small configuration must be
# within 5 % of what a real cluster does.
#
#   1. scripts/demo runs the real thing: four shoald on 127.0.0.1-4 over a local S3 server, every
#      node reads every object of a generated dataset; the S3 server counts the GETs it answered.
#   2. shoal-sim runs the same workload: four nodes, the demo's object sizes (read from its kept
#      work directory), its block size, every node reading everything once, caches large enough.
#   3. The predicted Shoal GETs must be within 5 % of the GETs S3 saw.
#
# Usage: tests/sim/against_reality.sh SHOAL_SIM [BIN_DIR]
#   SHOAL_SIM  the simulator (default build/sim/shoal-sim)
#   BIN_DIR    where shoald and shoal are built (default: scripts/demo builds them in build/demo)
# Environment: DEMO_FILES (200), DEMO_BLOCK_SIZE (1M), DEMO_NODES (4), DEMO_PORT (a free port).
# Exit 77 (skip) when the demo's tools (node, aws) are missing.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
sim=${1:-$root/build/sim/shoal-sim}
bindir=${2:-}
files=${DEMO_FILES:-200}
block=${DEMO_BLOCK_SIZE:-1M}
nodes=${DEMO_NODES:-4}
port=${DEMO_PORT:-$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}

for tool in node aws /usr/bin/python3; do
  command -v "$tool" >/dev/null || { echo "against_reality: $tool is missing; skipped"; exit 77; }
done
[ -x "$sim" ] || { echo "against_reality: no shoal-sim at $sim" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/shoal-reality.XXXXXX")
demo_work=
cleanup() {
  rm -rf "$work"
  if [ -n "$demo_work" ]; then rm -rf "$demo_work"; fi
}
trap cleanup EXIT

echo "== the real cluster (scripts/demo, $nodes nodes, $files objects, ${block} blocks, port $port)"
if ! DEMO_FILES=$files DEMO_BLOCK_SIZE=$block DEMO_NODES=$nodes DEMO_PORT=$port DEMO_BIN_DIR=$bindir \
     DEMO_MOUNT=0 DEMO_KEEP=1 "$root/scripts/demo" >"$work/demo.log" 2>&1; then
  demo_work=$(sed -n 's/^work directory kept: //p' "$work/demo.log" | tail -1)
  tail -40 "$work/demo.log" >&2
  echo "against_reality: scripts/demo failed" >&2
  exit 1
fi
demo_work=$(sed -n 's/^work directory kept: //p' "$work/demo.log" | tail -1)
real=$(sed -n 's/^S3 GETs seen by S3 *\([0-9][0-9]*\).*/\1/p' "$work/demo.log")
unique=$(sed -n 's/^unique blocks *\([0-9][0-9]*\).*/\1/p' "$work/demo.log")
if [ -z "$demo_work" ] || [ -z "$real" ] || [ -z "$unique" ]; then
  tail -20 "$work/demo.log" >&2
  echo "against_reality: could not read the demo's summary" >&2
  exit 1
fi
find "$demo_work/data" -type f -printf '%s\n' >"$work/sizes"
echo "real: $real GETs for $unique unique blocks ($(wc -l <"$work/sizes") objects)"

echo "== the simulator on the same workload"
block_bytes=$(/usr/bin/python3 -c "import sys; s=sys.argv[1]; m={'K':1<<10,'M':1<<20,'G':1<<30}; print(int(s[:-1])*m[s[-1].upper()] if s[-1].upper() in m else int(s))" "$block")
"$sim" --nodes "$nodes" --duration 40 --no-plots --out "$work/sim" \
  --workload "sizes=$work/sizes,block=$block_bytes,read=full,epochs=1,start=5,cache=2GiB" >"$work/sim.log"
predicted=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["systems"]["shoal"]["s3_gets"])' \
  "$work/sim/summary.json")
echo "predicted: $predicted GETs"

/usr/bin/python3 - "$predicted" "$real" <<'EOF'
import sys
predicted, real = float(sys.argv[1]), float(sys.argv[2])
err = abs(predicted - real) / real
print("prediction error: %.2f %% (limit 5 %%)" % (100 * err))
sys.exit(0 if err <= 0.05 else 1)
EOF
