#!/bin/sh
# Runs the S3 client benchmark against a fresh local S3 server (tests/s3rver/start.js,
# @20minutes/s3rver 4.0.4, signature-checking) and prints the table of bench_s3_get.c.
#
#   bench/s3/run.sh [BUILD_DIR] [extra shoal-bench-s3 arguments...]
#
# BUILD_DIR defaults to build-bench; the bench binary is built there if missing. Needs node and
# the npm packages of tests/s3rver (scripts/deps installs them) and Debian's awscli.
set -eu
here=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-$here/build-bench}
[ $# -gt 0 ] && shift
if [ ! -x "$build/bench/shoal-bench-s3" ]; then
  cmake -B "$build" -S "$here" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$build" --target shoal-bench-s3 -j2 >/dev/null
fi
[ -x /usr/bin/aws ] || { echo "run.sh: Debian's awscli (/usr/bin/aws) is missing: apt-get install awscli" >&2; exit 1; }

dir=$(mktemp -d /tmp/shoal-bench-s3rver-XXXXXX)
fifo=$dir/stdin
mkfifo "$fifo"
out=$dir/out
# The server stops when its stdin closes: keep the fifo open on fd 9 for as long as we run.
NODE_OPTIONS=--openssl-legacy-provider node "$here/tests/s3rver/start.js" --dir "$dir/data" --port 0 \
  --bucket bench <"$fifo" >"$out" &
server=$!
exec 9>"$fifo"
cleanup() { exec 9>&-; kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT INT TERM
i=0
while ! grep -q port "$out" 2>/dev/null; do
  i=$((i + 1))
  [ $i -lt 100 ] || { echo "run.sh: the S3 server did not start" >&2; exit 1; }
  sleep 0.1
done
port=$(sed -n 's/.*"port":\([0-9]*\).*/\1/p' "$out")

export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER AWS_DEFAULT_REGION=us-east-1
unset AWS_PROFILE AWS_SESSION_TOKEN || true
"$build/bench/shoal-bench-s3" --endpoint "http://127.0.0.1:$port" --bucket bench "$@"
