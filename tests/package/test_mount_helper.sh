#!/usr/bin/env bash
# mount.shoal, the helper mount(8) runs for `-t shoal` and /etc/fstab lines, on this machine with
# the built shoald: how it turns mount options into shoald's flags, what it refuses, and a real
# mount through it against the local S3 server. (The installed helper is run by mount(8) itself
# in a clean Debian 12 by test_package_debian.sh.)
#
# Environment (tests/package/CMakeLists.txt): MOUNT_SHOAL (the helper as configured for the
# tests: it runs the built shoald, its default config is MOUNT_SHOAL_CONFIG and its environment
# file MOUNT_SHOAL_ENV), SHOAL (the built client).
source "$(dirname "$0")/../support/tt.sh"

# run_helper ARGS...: runs the helper; its stderr in $err, its status in $rc. Its stderr is a
# file, which a daemon it starts inherits for its log.
run_helper() {
  local out
  out=$(mktemp "${TMPDIR:-/tmp}/shoal-helper-err.XXXXXX")
  rc=0
  "$MOUNT_SHOAL" "$@" >/dev/null 2>"$out" || rc=$?
  err=$(cat "$out")
  rm -f "$out"
}

# A cluster key and an empty mount point in a fresh directory: sets $dir, $key, $mnt.
prepare() {
  dir=$(tt_tmpdir mount-helper)
  chmod 755 "$dir" # other users reach the mount point inside
  key=$dir/cluster.key
  mnt=$dir/mnt
  "$SHOAL" keygen -o "$key"
  mkdir "$mnt"
}

test_mount_helper_turns_fstab_options_into_shoald_flags() {
  tt_isolate
  prepare
  local conf=$dir/other.conf
  printf 'cache-size = 2G\n' >"$conf"
  # -f: fake (check everything, mount nothing), -v: print the command line.
  run_helper s3://training-data/imagenet "$mnt" -f -v -o "ro,allow_other,uid=1000,gid=100,file_mode=0444,_netdev,nofail,defaults,noatime,x-systemd.automount,comment=x,cluster-key=$key,cache_size=1G,seeds=\"10.0.0.1:7400,10.0.0.2:7400\",advertise=10.0.0.9:7400,no-serve,metrics=off,config=$conf"
  tt_check "$rc" = 0 "exit $rc: $err"
  local want="--config $conf --bucket s3://training-data/imagenet --mount $mnt --read-only --allow-other --uid=1000 --gid=100 --file-mode=0444 --cluster-key=$key --cache-size=1G --seeds=10.0.0.1:7400,10.0.0.2:7400 --advertise=10.0.0.9:7400 --no-serve --metrics=off"
  [[ $err == *"shoald $want" ]] || tt_fail "the helper ran: $err; want: shoald $want"
  tt_check -z "$(tt_pids_of shoald)" "-f started a daemon"
  # The mount point is not the helper's to create; the kernel lists nothing there.
  if findmnt -rn -M "$mnt" >/dev/null; then tt_fail "-f mounted $mnt"; fi
}

test_mount_helper_uses_the_default_config_file_when_no_config_option_names_one() {
  prepare
  mkdir -p "$(dirname "$MOUNT_SHOAL_CONFIG")"
  printf 'cluster-key = %s\nadvertise = 10.0.0.9:7400\n' "$key" >"$MOUNT_SHOAL_CONFIG"
  tt_defer "rm -f '$MOUNT_SHOAL_CONFIG'"
  run_helper s3://training-data "$mnt" -f -v
  tt_check "$rc" = 0 "exit $rc: $err"
  [[ $err == *"shoald --config $MOUNT_SHOAL_CONFIG --bucket s3://training-data --mount $mnt" ]] ||
    tt_fail "the helper ran: $err"
}

test_mount_helper_refuses_bad_options_with_one_line_and_starts_nothing() {
  tt_isolate
  prepare
  local base=cluster-key=$key,advertise=10.0.0.9:7400
  run_helper s3://bucket/p "$mnt" -o "$base,bogus_flag=1"
  tt_check "$rc" = 1 "an unknown option: exit $rc ($err)"
  [[ $err == *"unknown option 'bogus_flag'"* ]] || tt_fail "an unknown option: $err"
  # -s (sloppy) leaves unknown options out instead.
  run_helper s3://bucket/p "$mnt" -f -s -o "$base,bogus_flag=1"
  tt_check "$rc" = 0 "-s with an unknown option: exit $rc ($err)"
  # A bad value is refused by shoald's own validation, with its own line.
  run_helper s3://bucket/p "$mnt" -o "$base,cache-size=10X"
  tt_check "$rc" = 1 "a bad value: exit $rc ($err)"
  [[ $err == *"shoald: --cache-size: '10X' is not a size"* ]] || tt_fail "a bad value: $err"
  run_helper s3://bucket/p "$mnt" -o "$base,allow_other=yes"
  [[ $rc = 1 && $err == *"option 'allow_other' takes no value"* ]] || tt_fail "a value for a switch: $rc $err"
  run_helper s3://bucket/p "$mnt" -o "$base,uid"
  [[ $rc = 1 && $err == *"option 'uid' needs a value"* ]] || tt_fail "no value for uid: $rc $err"
  run_helper s3://bucket/p "$mnt" -o "$base,bucket=s3://other"
  [[ $rc = 1 && $err == *"first two fields"* ]] || tt_fail "bucket= as an option: $rc $err"
  run_helper bucket/p "$mnt" -o "$base"
  [[ $rc = 1 && $err == *"is not s3://BUCKET"* ]] || tt_fail "a spec without s3://: $rc $err"
  run_helper s3://bucket/p "$dir/missing" -o "$base"
  [[ $rc = 32 && $err == *"does not exist"* ]] || tt_fail "a missing mount point: $rc $err"
  tt_check -z "$(tt_pids_of shoald)" "a refused mount started a daemon"
}

test_mount_helper_returns_once_mounted_and_umount_ends_the_daemon() {
  tt_isolate
  tt_require_fuse
  tt_s3rver_start shoal-test
  prepare
  printf 'through the helper\n' >"$dir/hello.txt"
  tt_s3_put shoal-test data/hello.txt "$dir/hello.txt"
  local port
  port=$(tt_free_port)
  export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER AWS_REGION=us-east-1
  local opts="cluster-key=$key,endpoint=$S3_ENDPOINT,path-style,bind=127.0.0.1:$port,metrics=off"
  opts+=",cache-dir=$dir/cache,control=$dir/shoald.sock,ro,allow_other,file_mode=0444"
  run_helper s3://shoal-test/data "$mnt" -o "$opts"
  tt_check "$rc" = 0 "mount: exit $rc ($err)"
  # Returned means mounted: the first read needs no wait.
  tt_check "$(cat "$mnt/hello.txt")" = "through the helper" "the file read through the mount"
  tt_check "$(stat -c %a "$mnt/hello.txt")" = 444 "file_mode=0444 was not applied"
  tt_check "$(setpriv --reuid=65534 --regid=65534 --clear-groups cat "$mnt/hello.txt")" = "through the helper" \
    "allow_other: nobody cannot read the file"
  local pids
  pids=$(tt_pids_of shoald)
  tt_check -n "$pids" "no shoald runs the mount"
  # A second mount of the same directory is refused while the first is up.
  run_helper s3://shoal-test/data "$mnt" -o "$opts"
  [[ $rc = 32 && $err == *"already a shoal mount"* ]] || tt_fail "a second mount: $rc $err"
  umount "$mnt"
  local i
  for ((i = 0; i < 300; i++)); do
    [ -z "$(tt_pids_of shoald)" ] && break
    sleep 0.1
  done
  tt_check -z "$(tt_pids_of shoald)" "shoald still runs 30 s after the umount"
}

test_mount_helper_fails_with_32_and_the_reason_when_the_daemon_exits_first() {
  tt_isolate
  tt_require_fuse
  prepare
  local port
  port=$(tt_free_port)
  # The cache directory cannot be created (its parent is a file): the daemon stops at start.
  : >"$dir/file"
  run_helper s3://shoal-test/data "$mnt" \
    -o "cluster-key=$key,endpoint=http://127.0.0.1:9,path-style,bind=127.0.0.1:$port,metrics=off,cache-dir=$dir/file/cache,control=$dir/shoald.sock"
  tt_check "$rc" = 32 "exit $rc ($err)"
  [[ $err == *"shoald exited with status 1 before $mnt was mounted"* ]] || tt_fail "the helper said: $err"
  [[ $err == *"module=daemon event=start_failed"* ]] || tt_fail "the daemon's reason is not shown: $err"
}

tt_main "$@"
