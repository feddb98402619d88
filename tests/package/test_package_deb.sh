#!/usr/bin/env bash
# The Debian package: `cpack` in the build directory makes shoal_<version>_amd64.deb with every
# file it should hold and the dependencies its binaries need, and systemd accepts its unit.
# The package is made from the plain build (a sanitizer build's binaries would need the
# sanitizers' libraries), so these cases exist only there.
#
# Environment (tests/package/CMakeLists.txt): SHOAL_BUILD_DIR (the build directory, where
# CPackConfig.cmake is), SHOAL_DEB_DIR (where the package is made; the cases after the first
# use it), SHOAL_VERSION.
source "$(dirname "$0")/../support/tt.sh"

deb() { echo "$SHOAL_DEB_DIR/shoal_${SHOAL_VERSION}_amd64.deb"; }

test_package_cpack_makes_the_deb() {
  command -v dpkg-shlibdeps >/dev/null || tt_skip "dpkg-shlibdeps is missing (Debian's dpkg-dev)"
  rm -rf "$SHOAL_DEB_DIR"
  mkdir -p "$SHOAL_DEB_DIR"
  local log=$SHOAL_DEB_DIR/cpack.log
  cpack -G DEB -B "$SHOAL_DEB_DIR" --config "$SHOAL_BUILD_DIR/CPackConfig.cmake" >"$log" 2>&1 ||
    { tail -n 40 "$log" >&2; tt_fail "cpack failed"; }
  tt_check -f "$(deb)" "cpack made no $(basename "$(deb)"): $(ls "$SHOAL_DEB_DIR")"
  tt_check "$(dpkg-deb -f "$(deb)" Package Version Architecture | tr '\n' ' ')" = \
    "Package: shoal Version: $SHOAL_VERSION Architecture: amd64 " "the package's name, version or architecture"
}

test_package_deb_holds_every_file_with_its_mode_and_the_conffile() {
  tt_check -f "$(deb)" "no package: test_package_cpack_makes_the_deb makes it"
  local list
  list=$(dpkg-deb -c "$(deb)" | awk '{print $1, $6}')
  local want=(
    "-rwxr-xr-x ./usr/bin/shoald"
    "-rwxr-xr-x ./usr/bin/shoal"
    "-rwxr-xr-x ./usr/bin/shoal-sim"
    "-rwxr-xr-x ./usr/sbin/mount.shoal"
    "-rw-r--r-- ./usr/lib/systemd/system/shoald.service"
    "-rw-r--r-- ./etc/shoal/shoald.conf"
    "-rw-r--r-- ./usr/share/man/man8/shoald.8.gz"
    "-rw-r--r-- ./usr/share/man/man1/shoal.1.gz"
    "-rw-r--r-- ./usr/share/man/man1/shoal-sim.1.gz"
    "-rw-r--r-- ./usr/share/bash-completion/completions/shoal"
    "-rw-r--r-- ./usr/share/bash-completion/completions/shoald"
    "-rw-r--r-- ./usr/share/doc/shoal/copyright"
  )
  local w missing=()
  for w in "${want[@]}"; do
    grep -qxF -- "$w" <<<"$list" || missing+=("$w")
  done
  tt_check ${#missing[@]} = 0 "not in the package (mode path): ${missing[*]:-}; it holds: $list"
  local ctl
  ctl=$(tt_tmpdir deb-control)
  dpkg-deb -e "$(deb)" "$ctl"
  tt_check "$(cat "$ctl/conffiles")" = /etc/shoal/shoald.conf "DEBIAN/conffiles: $(cat "$ctl/conffiles")"
  # The unit and the helper name the installed paths.
  local files
  files=$(tt_tmpdir deb-files)
  dpkg-deb -x "$(deb)" "$files"
  tt_grep '^ExecStart=/usr/bin/shoald --config /etc/shoal/shoald.conf$' "$files/usr/lib/systemd/system/shoald.service" \
    "the unit's command line"
  tt_grep '^EnvironmentFile=-/etc/default/shoald$' "$files/usr/lib/systemd/system/shoald.service" "the unit's environment file"
  tt_grep '^shoald=/usr/bin/shoald$' "$files/usr/sbin/mount.shoal" "the helper's shoald"
  tt_grep '^default_config=/etc/shoal/shoald.conf$' "$files/usr/sbin/mount.shoal" "the helper's config file"
  # The installed binaries are stripped; their symbols are in the -dbgsym package beside it.
  local b
  for b in shoald shoal shoal-sim; do
    if readelf -S "$files/usr/bin/$b" | grep -q '\.symtab'; then tt_fail "$b is not stripped"; fi
  done
  tt_check -f "$SHOAL_DEB_DIR/shoal-dbgsym_${SHOAL_VERSION}_amd64.ddeb" "no debug symbols package"
}

test_package_deb_depends_on_the_libraries_of_its_binaries_and_fuse3() {
  tt_check -f "$(deb)" "no package: test_package_cpack_makes_the_deb makes it"
  local depends names
  depends=$(dpkg-deb -f "$(deb)" Depends)
  names=$(tr ',' '\n' <<<"$depends" | sed -E 's/^ *([^ ]+).*/\1/' | sort -u)
  # fuse3 (fusermount3) and ca-certificates (S3 over https) are named by hand; the rest come
  # from the binaries (dpkg-shlibdeps), each with a minimum version.
  local p
  for p in fuse3 ca-certificates libc6 libfuse3-3 libzmq5 libsodium23 libcurl4 libssl3 libxml2 libmsgpackc2 \
           libinih1 libmicrohttpd12 libxxhash0 libjson-c5 libsystemd0; do
    grep -qx "$p" <<<"$names" || tt_fail "Depends lacks $p: $depends"
  done
  [[ $depends == *"libzmq5 (>= "* ]] || tt_fail "the library dependencies carry no versions (not from shlibs?): $depends"
  # scripts/deps --runtime installs exactly these packages (libc6 is always there).
  local runtime
  runtime=$("$TT_SOURCE_DIR/scripts/deps" --runtime --print | tr ' ' '\n' | sort -u)
  tt_check "$runtime" = "$(grep -vx libc6 <<<"$names")" \
    "scripts/deps --runtime installs [$(echo $runtime)], the package needs [$(echo $names)]"
  # docs/operations.md writes the same list down.
  local documented
  documented=$(sed -n '/^### What a node needs at run time/,/^##/p' "$TT_SOURCE_DIR/docs/operations.md" |
    sed -n '/^```$/,/^```$/p' | grep -v '^```' | tr ' ' '\n' | grep . | sort -u)
  tt_check "$documented" = "$runtime" "docs/operations.md lists [$(echo $documented)], not [$(echo $runtime)]"
}

test_package_systemd_analyze_verify_accepts_the_unit() {
  tt_check -f "$(deb)" "no package: test_package_cpack_makes_the_deb makes it"
  command -v systemd-analyze >/dev/null || tt_skip "systemd-analyze is missing (Debian's systemd)"
  local root out rc=0
  root=$(tt_tmpdir unit-root)
  # A root holding the package's files and this machine's own units (the targets the unit names),
  # so `verify` finds the unit's programs and man page there, not on this machine.
  dpkg-deb -x "$(deb)" "$root"
  mkdir -p "$root/usr/lib/systemd/system" "$root/bin"
  cp -an /lib/systemd/system/. "$root/usr/lib/systemd/system/"
  # ExecReload runs /bin/sh, which every Debian system has (dash is essential).
  cp -L /bin/sh "$root/bin/sh"
  out=$(MANPATH=$root/usr/share/man systemd-analyze verify --root="$root" /usr/lib/systemd/system/shoald.service 2>&1) ||
    rc=$?
  # verify reports unknown keys and bad values as warnings with exit 0: any output fails.
  tt_check "$rc" = 0 "systemd-analyze verify: exit $rc: $out"
  tt_check -z "$out" "systemd-analyze verify: $out"
  # What the daemon and the docs rely on.
  local unit=$root/usr/lib/systemd/system/shoald.service
  tt_grep '^Type=notify$' "$unit" "Type=notify"
  tt_grep '^NotifyAccess=main$' "$unit" "NotifyAccess=main"
  tt_grep '^KillSignal=SIGTERM$' "$unit" "KillSignal"
  tt_grep '^RuntimeDirectory=shoal$' "$unit" "/run/shoal for the control socket"
  tt_grep '^CacheDirectory=shoal$' "$unit" "/var/cache/shoal, the default --cache-dir"
  tt_grep '^DeviceAllow=/dev/fuse rw$' "$unit" "/dev/fuse"
  tt_grep '^CapabilityBoundingSet=.*CAP_SYS_ADMIN' "$unit" "CAP_SYS_ADMIN for the mount"
  # Nothing that gives the service a mount namespace of its own, where its mount would be hidden.
  if grep -qE '^(ProtectSystem|ProtectHome|PrivateTmp|PrivateDevices|PrivateMounts|ReadWritePaths|ReadOnlyPaths|InaccessiblePaths|TemporaryFileSystem|BindPaths|BindReadOnlyPaths|ProtectKernelTunables|ProtectKernelModules|ProtectKernelLogs|ProtectControlGroups|ProtectProc|MountFlags)=' "$unit"; then
    tt_fail "the unit sets up a mount namespace: $(grep -E '^(Protect|Private|ReadWrite|ReadOnly|Inaccessible|Temporary|Bind|MountFlags)' "$unit")"
  fi
}

tt_main "$@"
