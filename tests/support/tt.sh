# tt.sh: the test runner of tests/support/tt.h for bash scripts. Source it, define one function
# per case named after the behaviour it proves, and end the script with `tt_main "$@"`:
#
#   test_mount_helper_refuses_an_unknown_option() { ...; tt_check "$rc" = 1 "exit status $rc"; }
#   tt_main "$@"
#
# `script CASE` runs one case (CMake registers each as its own CTest entry, shoal_script_test in
# tests/CMakeLists.txt); `script --list` lists them. tt_check fails the case (exit 1) with the
# caller's line and message; tt_skip exits 77, which CTest reports as skipped. Cleanup functions
# registered with tt_defer run at exit, last first, whatever the outcome.

set -euo pipefail

TT_SOURCE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
tt_deferred=()
# The temporary directories to remove at exit, one a line. A file, not an array: tt_tmpdir runs
# in a command substitution (d=$(tt_tmpdir x)), a subshell whose variables the script never sees.
tt_tmp_list=$(mktemp "${TMPDIR:-/tmp}/shoal-tt-tmp.XXXXXX")

tt_run_deferred() {
  local rc=$? i d m
  for ((i = ${#tt_deferred[@]} - 1; i >= 0; i--)); do
    eval "${tt_deferred[i]}" || true
  done
  # Last, the temporary directories, after what was mounted in them is unmounted.
  while read -r d; do
    while read -r m; do umount -l "$m" 2>/dev/null || true; done < <(awk -v d="$d/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r)
    rm -rf --one-file-system "$d"
  done <"$tt_tmp_list"
  rm -f "$tt_tmp_list"
  return $rc
}
trap tt_run_deferred EXIT

# tt_defer COMMAND: run COMMAND (a string, eval'ed) at exit.
tt_defer() { tt_deferred+=("$1"); }

tt_note() { echo "# $*"; }

tt_fail() {
  echo "FAIL ${tt_case:-?} at ${BASH_SOURCE[1]:-?}:${BASH_LINENO[0]:-?}: $*" >&2
  exit 1
}

tt_skip() {
  echo "SKIP ${tt_case:-?}: $*"
  exit 77
}

# tt_check TEST-ARGS... MESSAGE: fails with MESSAGE unless `[ TEST-ARGS ]` holds.
tt_check() {
  local msg=${*: -1}
  if ! [ "${@:1:$#-1}" ]; then
    echo "FAIL ${tt_case:-?} at ${BASH_SOURCE[1]}:${BASH_LINENO[0]}: check [ ${*:1:$#-1} ]: $msg" >&2
    exit 1
  fi
}

# tt_grep PATTERN FILE MESSAGE: fails unless FILE has a line matching the extended regex PATTERN.
tt_grep() {
  if ! grep -qE -- "$1" "$2"; then
    echo "FAIL ${tt_case:-?} at ${BASH_SOURCE[1]}:${BASH_LINENO[0]}: no line matching /$1/ in $2: $3" >&2
    echo "--- $2:" >&2
    tail -n 30 "$2" >&2
    exit 1
  fi
}

# tt_tmpdir TAG: a fresh directory, removed at exit (unless TT_KEEP=1).
tt_tmpdir() {
  local d
  d=$(mktemp -d "${TMPDIR:-/tmp}/shoal-$1.XXXXXX")
  if [ "${TT_KEEP:-0}" != 1 ]; then echo "$d" >>"$tt_tmp_list"; fi
  echo "$d"
}

# tt_free_port: a TCP and UDP port free on 127.0.0.1 right now.
tt_free_port() {
  /usr/bin/python3 - <<'EOF'
import socket
while True:
    t = socket.socket(); t.bind(("127.0.0.1", 0)); port = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", port)); print(port); break
    except OSError:
        pass
    finally:
        u.close(); t.close()
EOF
}

# tt_require_fuse: skips unless this process may mount FUSE file systems (root with
# CAP_SYS_ADMIN and a usable /dev/fuse).
tt_require_fuse() {
  [ -c /dev/fuse ] && [ -r /dev/fuse ] && [ -w /dev/fuse ] || tt_skip "/dev/fuse is missing or not accessible here"
  [ "$(id -u)" = 0 ] || tt_skip "not root: mounting through mount(8) needs root"
  local caps
  caps=$(sed -n 's/^CapEff:\s*//p' /proc/self/status)
  (( (16#$caps >> 21) & 1 )) || tt_skip "running as root without CAP_SYS_ADMIN: mounting is not permitted"
}

# tt_isolate: runs the current case again, from its start, in new mount and PID namespaces of
# its own (call it first thing in the case). Every mount it makes is private and goes with it, and
# every process it starts, detached daemons included, is killed when it ends. Skips when this
# machine does not allow it.
tt_isolate() {
  [ "${TT_ISOLATED:-0}" = 1 ] && return 0
  unshare --mount --pid --fork --kill-child --propagation private --mount-proc true 2>/dev/null ||
    tt_skip "cannot create mount and PID namespaces here (unshare)"
  rm -f "$tt_tmp_list" # empty yet; the case run again keeps a list of its own
  TT_ISOLATED=1 exec unshare --mount --pid --fork --kill-child --propagation private --mount-proc \
    "$0" "$tt_case"
}

# tt_pids_of NAME: the processes (of this PID namespace) whose command name is NAME.
tt_pids_of() {
  local f
  for f in /proc/[0-9]*/comm; do
    [ "$(cat "$f" 2>/dev/null)" = "$1" ] && { f=${f#/proc/}; echo "${f%/comm}"; }
  done
  return 0
}

# tt_s3rver_start BUCKET: the local S3 server (tests/s3rver, verifies SigV4) on a free port of
# 127.0.0.1 with one bucket; sets S3_PORT and S3_ENDPOINT. It stops when the script exits (its
# stdin is a pipe this shell holds). Skips when Node or the server's packages are missing.
tt_s3rver_start() {
  command -v node >/dev/null || tt_skip "node is missing (scripts/deps installs it)"
  [ -f "$TT_SOURCE_DIR/tests/s3rver/node_modules/@20minutes/s3rver/package.json" ] ||
    tt_skip "the local S3 server is not installed (run scripts/deps)"
  local d
  d=$(tt_tmpdir s3rver)
  mkfifo "$d/in"
  NODE_OPTIONS=--openssl-legacy-provider node "$TT_SOURCE_DIR/tests/s3rver/start.js" --dir "$d/data" --port 0 \
    --bucket "$1" <"$d/in" >"$d/out" 2>"$d/err" &
  tt_defer "kill $! 2>/dev/null"
  exec {tt_s3rver_fd}>"$d/in"
  local i
  for ((i = 0; i < 300; i++)); do
    grep -q '"port"' "$d/out" 2>/dev/null && break
    kill -0 $! 2>/dev/null || break
    sleep 0.1
  done
  S3_PORT=$(sed -n 's/.*"port":\([0-9]*\).*/\1/p' "$d/out")
  [ -n "$S3_PORT" ] || { cat "$d/err" >&2; tt_fail "the local S3 server did not start"; }
  S3_ENDPOINT=http://127.0.0.1:$S3_PORT
}

# tt_s3_put BUCKET KEY FILE: uploads FILE to the local S3 server (curl signs the request).
tt_s3_put() {
  curl -sS --fail-with-body --aws-sigv4 "aws:amz:us-east-1:s3" --user S3RVER:S3RVER \
    -H "x-amz-content-sha256: $(sha256sum <"$3" | cut -d' ' -f1)" -T "$3" "$S3_ENDPOINT/$1/$2" >/dev/null ||
    tt_fail "PUT s3://$1/$2 to the local S3 server failed"
}

tt_main() {
  if [ "${1:-}" = --list ]; then
    declare -F | sed -n 's/^declare -f \(test_[A-Za-z0-9_]*\)$/\1/p'
    return 0
  fi
  [ $# -ge 1 ] && declare -F "$1" >/dev/null || { echo "usage: $0 CASE [ARGS...] (--list for the cases)" >&2; exit 2; }
  tt_case=$1
  shift
  "$tt_case" "$@"
  echo "PASS $tt_case"
}
