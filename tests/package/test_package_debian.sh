#!/usr/bin/env bash
# The package in a clean Debian 12: a minimal root made by `debootstrap --variant=minbase
# bookworm` from Debian's mirror, where apt installs the .deb and resolves its dependencies (by
# the steps of deploy/Dockerfile, so the container image is built as tested here), the
# programs run, and mount(8) mounts a bucket of the local S3 server through mount.shoal, both by
# `mount -t shoal` and from an /etc/fstab line. A second root gets only `scripts/deps --runtime`,
# and the programs of this build run there.
#
# The root is made once and kept under the build directory (SHOAL_DEBIAN_DIR), with apt's lists
# refreshed when a day old; each case works on a copy of it (an overlay, or cp -a where overlays
# are not allowed) inside mount and PID namespaces of its own (tt_isolate), so nothing it mounts or
# starts outlives it. Downloaded packages are kept too (SHOAL_DEBIAN_DIR/archives). When Debian's
# mirror cannot be reached the cases skip (77) and say so.
#
# Environment (tests/package/CMakeLists.txt): SHOAL_DEB_DIR, SHOAL_VERSION, SHOAL_DEBIAN_DIR,
# SHOALD, SHOAL, SHOAL_SIM (this build's programs), SHOAL_DEBIAN_MIRROR (default
# http://deb.debian.org/debian).
source "$(dirname "$0")/../support/tt.sh"

mirror=${SHOAL_DEBIAN_MIRROR:-http://deb.debian.org/debian}
pristine=$SHOAL_DEBIAN_DIR/bookworm-minbase
archives=$SHOAL_DEBIAN_DIR/archives
deb=$SHOAL_DEB_DIR/shoal_${SHOAL_VERSION}_amd64.deb

# in_root ROOT CMD...: runs CMD in the chroot with a clean environment.
in_root() {
  local root=$1
  shift
  chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
    DEBIAN_FRONTEND=noninteractive "$@"
}

# Mounts what programs in ROOT need: /proc (this PID namespace's), /dev (for /dev/fuse), a
# fresh /run, and the kept package archives.
mount_root_fs() {
  local root=$1
  mount -t proc proc "$root/proc"
  mount --rbind /dev "$root/dev"
  mount -t tmpfs tmpfs "$root/run"
  mkdir -p "$archives/partial" "$root/var/cache/apt/archives"
  mount --bind "$archives" "$root/var/cache/apt/archives"
  cp /etc/resolv.conf "$root/etc/resolv.conf"
}

# Makes the pristine root when it is missing and refreshes apt's lists in it once a day; holds a
# shared lock on it (fd 8) for the rest of the case, so no refresh changes it under a copy.
require_debian_root() {
  [ "$(id -u)" = 0 ] || tt_skip "not root: debootstrap and chroot need root"
  command -v debootstrap >/dev/null || tt_skip "debootstrap is missing (scripts/deps installs it)"
  curl -sf --max-time 30 -o /dev/null "$mirror/dists/bookworm/InRelease" ||
    tt_skip "Debian's mirror $mirror cannot be reached: no clean Debian 12 root to install into"
  mkdir -p "$SHOAL_DEBIAN_DIR"
  exec 8>"$SHOAL_DEBIAN_DIR/lock"
  flock -x 8
  if [ ! -f "$pristine/.complete" ]; then
    rm -rf --one-file-system "$pristine"
    local t0=$SECONDS
    tt_note "debootstrap --variant=minbase bookworm from $mirror (kept in $pristine for the next runs)"
    debootstrap --variant=minbase bookworm "$pristine" "$mirror" >"$SHOAL_DEBIAN_DIR/debootstrap.log" 2>&1 ||
      { tail -n 30 "$SHOAL_DEBIAN_DIR/debootstrap.log" >&2; tt_fail "debootstrap failed"; }
    rm -rf "$pristine/var/cache/apt/archives/"*.deb
    touch "$pristine/.complete"
    tt_note "debootstrap took $((SECONDS - t0)) s"
  fi
  if [ -z "$(find "$pristine/.complete" -mmin -1440)" ]; then
    tt_note "refreshing apt's lists of the kept root"
    (
      mount -t proc proc "$pristine/proc"
      cp /etc/resolv.conf "$pristine/etc/resolv.conf"
      in_root "$pristine" apt-get update -qq
      umount "$pristine/proc"
    ) || tt_fail "apt-get update in the kept root failed"
    touch "$pristine/.complete"
  fi
  flock -s 8
}

# fresh_root: a throwaway copy of the pristine root with its file systems mounted; sets $root.
fresh_root() {
  local d
  d=$(tt_tmpdir debian)
  mkdir "$d/upper" "$d/work" "$d/root"
  root=$d/root
  if ! mount -t overlay overlay -o "lowerdir=$pristine,upperdir=$d/upper,workdir=$d/work" "$root" 2>/dev/null; then
    tt_note "no overlay mounts here: copying the root"
    cp -a "$pristine/." "$root/"
  fi
  mount_root_fs "$root"
}

# install_deb: the package into $root as deploy/Dockerfile builds the container image (on Debian
# 12 slim, which this root stands for): its COPY of the package (from the folder cpack writes it
# to) and its RUN line, where apt resolves the dependencies from the mirror.
install_deb() {
  tt_check -f "$deb" "no package at $deb (test_package_cpack_makes_the_deb makes it)"
  local df=$TT_SOURCE_DIR/deploy/Dockerfile src dest run
  read -r src dest < <(sed -n 's/^COPY \([^ ]*\) \([^ ]*\)$/\1 \2/p' "$df")
  # shellcheck disable=SC2053
  [[ $(basename "$deb") == $src ]] || tt_fail "the Dockerfile copies $src, not the package $(basename "$deb")"
  cp "$deb" "$root/$dest"
  run=$(awk '/^RUN /{on=1; sub(/^RUN /,"")} on{ if (sub(/\\$/,"")) {printf "%s", $0} else {print; on=0} }' "$df")
  tt_check -n "$run" "no RUN line in $df"
  local t0=$SECONDS
  in_root "$root" sh -c "$run" >"$root/tmp/apt.log" 2>&1 ||
    { tail -n 30 "$root/tmp/apt.log" >&2; tt_fail "the Dockerfile's RUN line failed: $run"; }
  tt_note "the Dockerfile's RUN line (apt-get install of the package and its dependencies) took $((SECONDS - t0)) s"
}

test_package_installs_into_a_clean_debian_12_with_apt_resolving_its_dependencies() {
  tt_isolate
  require_debian_root
  fresh_root
  tt_check -z "$(in_root "$root" dpkg-query -W -f='${Status}' fuse3 2>/dev/null || true)" \
    "the clean root already has fuse3: it is not minimal"
  install_deb
  tt_check "$(in_root "$root" dpkg-query -W -f='${Status} ${Version}' shoal)" = "install ok installed $SHOAL_VERSION" \
    "dpkg does not list the package as installed"
  tt_check "$(in_root "$root" shoald --version)" = "shoald $SHOAL_VERSION" "shoald --version"
  tt_check "$(in_root "$root" shoal --version)" = "shoal $SHOAL_VERSION" "shoal --version"
  tt_check "$(in_root "$root" shoal-sim --version)" = "shoal-sim $SHOAL_VERSION" "shoal-sim --version"
  in_root "$root" shoal --help >"$root/tmp/help" || tt_fail "shoal --help failed in the Debian root"
  tt_grep '^usage: shoal ' "$root/tmp/help" "shoal --help"
  in_root "$root" shoald --help >"$root/tmp/help" || tt_fail "shoald --help failed in the Debian root"
  tt_grep '^  --check-config' "$root/tmp/help" "shoald --help"
  # What the dependencies brought: fusermount3 (fuse3) and the CA bundle (ca-certificates).
  tt_check -x "$root/usr/bin/fusermount3" "fuse3 was not installed"
  tt_check -s "$root/etc/ssl/certs/ca-certificates.crt" "ca-certificates was not installed"
  # mount(8) finds the helper at /sbin/mount.shoal (Debian 12's /sbin is /usr/sbin).
  tt_check -x "$root/sbin/mount.shoal" "no /sbin/mount.shoal"
  # Removal runs the maintainer scripts; purge removes the conffile too.
  in_root "$root" dpkg --purge shoal >"$root/tmp/purge.log" 2>&1 || { cat "$root/tmp/purge.log" >&2; tt_fail "dpkg --purge failed"; }
  tt_check ! -e "$root/etc/shoal/shoald.conf" "the conffile is still there after a purge"
  tt_check ! -e "$root/usr/bin/shoald" "shoald is still there after a purge"
}

# The root's shoald configuration for the local S3 server: the sample config edited as a user
# would, credentials in /etc/default/shoald.
configure_root() {
  local port
  port=$(tt_free_port)
  in_root "$root" shoal keygen -o /etc/shoal/cluster.key
  {
    echo "cluster-key = /etc/shoal/cluster.key"
    echo "endpoint = $S3_ENDPOINT"
    echo "path-style = true"
    echo "region = us-east-1"
    echo "bind = 127.0.0.1:$port"
    echo "metrics = off"
  } >>"$root/etc/shoal/shoald.conf"
  printf 'AWS_ACCESS_KEY_ID=S3RVER\nAWS_SECRET_ACCESS_KEY=S3RVER\n' >"$root/etc/default/shoald"
  chmod 600 "$root/etc/default/shoald"
  mkdir -p "$root/mnt/data"
  in_root "$root" shoald --check-config --config /etc/shoal/shoald.conf --bucket s3://shoal-test >/dev/null ||
    tt_fail "the edited /etc/shoal/shoald.conf is refused"
}

# wait_no_shoald: no shoald runs any more (after an umount), within 30 s.
wait_no_shoald() {
  local i
  for ((i = 0; i < 300; i++)); do
    [ -z "$(tt_pids_of shoald)" ] && return 0
    sleep 0.1
  done
  tt_fail "shoald still runs 30 s after $1"
}

test_package_mount_t_shoal_and_an_fstab_line_mount_through_the_daemon_in_debian_12() {
  tt_isolate
  tt_require_fuse
  tt_s3rver_start shoal-test
  require_debian_root
  fresh_root
  install_deb
  printf 'read through mount.shoal\n' >"$root/tmp/hello.txt"
  tt_s3_put shoal-test data/hello.txt "$root/tmp/hello.txt"
  configure_root
  local log=$root/tmp/mount.log

  # By hand: mount -t shoal. Only the environment file holds the credentials.
  in_root "$root" mount -t shoal -o ro,allow_other s3://shoal-test/data /mnt/data 2>"$log" ||
    { cat "$log" >&2; tt_fail "mount -t shoal failed"; }
  tt_check "$(in_root "$root" findmnt -rn -o FSTYPE -M /mnt/data)" = fuse.shoal "no shoal mount at /mnt/data"
  tt_check "$(in_root "$root" cat /mnt/data/hello.txt)" = "read through mount.shoal" "the file read through mount -t shoal"
  tt_check "$(in_root "$root" setpriv --reuid=65534 --regid=65534 --clear-groups cat /mnt/data/hello.txt)" = \
    "read through mount.shoal" "allow_other: nobody cannot read the file"
  in_root "$root" umount /mnt/data
  wait_no_shoald "umount /mnt/data"

  # From /etc/fstab, as systemd's mount units and `mount -a` run it.
  echo "s3://shoal-test/data /mnt/data shoal _netdev,nofail,allow_other,file_mode=0440,gid=65534 0 0" >>"$root/etc/fstab"
  in_root "$root" mount /mnt/data 2>"$log" || { cat "$log" >&2; tt_fail "mount /mnt/data (fstab) failed"; }
  tt_check "$(in_root "$root" cat /mnt/data/hello.txt)" = "read through mount.shoal" "the file read through the fstab mount"
  tt_check "$(in_root "$root" stat -c '%a %g' /mnt/data/hello.txt)" = "440 65534" "the fstab line's file_mode and gid"
  in_root "$root" umount /mnt/data
  wait_no_shoald "umount /mnt/data (fstab)"
  # The daemon logged to the helper's standard error: it started, mounted and left.
  tt_grep 'module=mount event=mounted' "$log" "the daemon's log"
  tt_grep 'module=daemon event=unmounted' "$log" "the daemon's log"
}

test_package_runtime_packages_of_scripts_deps_run_the_built_programs_in_debian_12() {
  tt_isolate
  require_debian_root
  fresh_root
  # scripts/deps --runtime in the clean root: apt installs the runtime list, and nothing else.
  mkdir -p "$root/tmp/src/scripts"
  cp "$TT_SOURCE_DIR/scripts/deps" "$root/tmp/src/scripts/"
  in_root "$root" /tmp/src/scripts/deps --runtime >"$root/tmp/deps.log" 2>&1 ||
    { tail -n 30 "$root/tmp/deps.log" >&2; tt_fail "scripts/deps --runtime failed in the clean root"; }
  tt_check -z "$(in_root "$root" dpkg-query -W -f='${Status}' cmake 2>/dev/null || true)" "--runtime installed cmake"
  tt_check -z "$(in_root "$root" dpkg-query -W -f='${Status}' nodejs 2>/dev/null || true)" "--runtime installed nodejs"
  local b
  for b in "$SHOALD" "$SHOAL" "$SHOAL_SIM"; do
    cp "$b" "$root/usr/local/bin/"
    b=$(basename "$b")
    if in_root "$root" ldd "/usr/local/bin/$b" | grep -q 'not found'; then
      tt_fail "$b lacks libraries with only the runtime packages: $(in_root "$root" ldd "/usr/local/bin/$b" | grep 'not found')"
    fi
    tt_check "$(in_root "$root" "/usr/local/bin/$b" --version)" = "$b $SHOAL_VERSION" "$b --version with only the runtime packages"
  done
}

tt_main "$@"
