#!/usr/bin/env bash
# deploy/ against the programs: the Kubernetes manifests parse and the kustomization lists each
# one; the DaemonSet's arguments with the ConfigMap's shoald.conf pass `shoald --check-config`;
# its probes name paths a running shoald serves, on the port it is told to listen on; the
# Dockerfile starts from Debian 12 slim, copies the package cpack makes and runs the shoald the
# package installs; every image name (DaemonSet, Dockerfile, docs) is the same.
#
# No container runtime is needed: building the image is `apt-get install` of the .deb in Debian
# 12, which test_package_debian.sh does with the Dockerfile's own RUN line.
#
# Environment (tests/deploy/CMakeLists.txt): SHOALD, SHOAL, SHOAL_VERSION, SHOAL_DEB_DIR.
source "$(dirname "$0")/../support/tt.sh"
deploy=$TT_SOURCE_DIR/deploy
k8s=$deploy/kubernetes

require_yaml() {
  /usr/bin/python3 -c 'import yaml' 2>/dev/null || tt_skip "python3-yaml is missing (scripts/deps installs it)"
}

# k8s_get EXPR: evaluates the Python expression EXPR over the manifests (`docs`: kind -> the
# parsed object; `ds`: the DaemonSet; `ctr`: its shoald container) and prints the result, a list
# one item a line.
k8s_get() {
  /usr/bin/python3 - "$k8s" "$1" <<'PY'
import glob, os, sys, yaml
docs = {}
for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.yaml"))):
    for d in yaml.safe_load_all(open(path)):
        if d:
            docs[d["kind"]] = d
ds = docs.get("DaemonSet")
ctr = next(c for c in ds["spec"]["template"]["spec"]["containers"] if c["name"] == "shoald") if ds else None
v = eval(sys.argv[2])
for item in (v if isinstance(v, list) else [v]):
    print(item)
PY
}

test_deploy_manifests_parse_and_the_kustomization_lists_each_one() {
  require_yaml
  local f listed=() present=()
  for f in "$k8s"/*.yaml; do
    /usr/bin/python3 -c '
import sys, yaml
for d in yaml.safe_load_all(open(sys.argv[1])):
    assert d and d.get("apiVersion") and d.get("kind"), "a document without apiVersion and kind"
    assert d["kind"] == "Kustomization" or d["metadata"]["name"], "no name"
' "$f" 2>"$f.err.$$" || { local e; e=$(tail -n 1 "$f.err.$$"); rm -f "$f.err.$$"; tt_fail "$(basename "$f") does not parse: $e"; }
    rm -f "$f.err.$$"
    [ "$(basename "$f")" = kustomization.yaml ] || present+=("$(basename "$f")")
  done
  mapfile -t listed < <(k8s_get 'docs["Kustomization"]["resources"]' | sort)
  tt_check "${listed[*]}" = "$(printf '%s\n' "${present[@]}" | sort | tr '\n' ' ' | sed 's/ $//')" \
    "kustomization.yaml lists [${listed[*]}], the folder holds [${present[*]}]"
  # Everything lives in the namespace the kustomization sets, and the DaemonSet mounts the
  # ConfigMap and uses the ServiceAccount defined beside it.
  tt_check "$(k8s_get 'sorted({d["metadata"].get("namespace", "shoal") for k, d in docs.items() if k not in ("Kustomization", "Namespace")})')" = shoal \
    "a manifest outside the namespace shoal"
  tt_check "$(k8s_get 'ds["spec"]["template"]["spec"]["serviceAccountName"] == docs["ServiceAccount"]["metadata"]["name"]')" = True \
    "the DaemonSet's service account is not the one defined"
  tt_check "$(k8s_get 'docs["ConfigMap"]["metadata"]["name"] in [s.get("configMap", {}).get("name") for v in ds["spec"]["template"]["spec"]["volumes"] for s in v.get("projected", {}).get("sources", [])]')" = True \
    "the DaemonSet does not mount the ConfigMap"
  # The mount is propagated to the host, which needs a privileged container.
  tt_check "$(k8s_get '[m["mountPropagation"] for m in ctr["volumeMounts"] if m["mountPath"] == "/mnt/shoal"]')" = Bidirectional \
    "/mnt/shoal is not mounted with Bidirectional propagation"
  tt_check "$(k8s_get 'ctr["securityContext"]["privileged"]')" = True "the shoald container is not privileged"
}

# The DaemonSet's arguments, with the pod's variables filled in as Kubernetes would.
daemonset_args() {
  k8s_get 'ctr["args"]' | sed 's/\$(NODE_NAME)/gpu-node-01/; s/\$(NODE_IP)/10.0.0.11/'
}

test_deploy_daemonset_args_and_configmap_pass_shoald_check_config() {
  require_yaml
  local dir args out
  dir=$(tt_tmpdir deploy)
  # /etc/shoal in the pod: shoald.conf from the ConfigMap and the cluster key from its secret.
  k8s_get 'docs["ConfigMap"]["data"]["shoald.conf"]' >"$dir/shoald.conf"
  "$SHOAL" keygen -o "$dir/cluster.key"
  tt_grep '^cluster-key = /etc/shoal/cluster.key$' "$dir/shoald.conf" "the ConfigMap names another key file"
  sed -i "s|^cluster-key = .*|cluster-key = $dir/cluster.key|" "$dir/shoald.conf"
  mapfile -t args < <(daemonset_args | sed "s|^--config=/etc/shoal/shoald.conf$|--config=$dir/shoald.conf|")
  tt_check "${#args[@]}" -ge 3 "read only ${#args[@]} arguments from the DaemonSet"
  out=$(env -i PATH="$PATH" AWS_REGION=us-west-2 "$SHOALD" "${args[@]}" --check-config 2>&1) ||
    tt_fail "shoald refuses the DaemonSet's arguments [${args[*]}] with the ConfigMap: $out"
  [[ $out == *"configuration OK (flags and $dir/shoald.conf)"* ]] || tt_fail "unexpected answer: $out"
  # The same check refuses what is wrong, so its OK above means something.
  out=$(env -i PATH="$PATH" "$SHOALD" "${args[@]}" --cache-size=lots --check-config 2>&1) && tt_fail "a bad --cache-size passed: $out"
  [[ $out == *"--cache-size"* ]] || tt_fail "the refusal does not name --cache-size: $out"
}

# http_code URL: the status code of a GET (000 when nothing answers).
http_code() { curl -s -o /dev/null -m 5 -w '%{http_code}' "$1" || true; }

test_deploy_probes_name_paths_and_the_port_that_shoald_serves() {
  require_yaml
  tt_isolate
  local dir port metrics_port code i path probes=()
  dir=$(tt_tmpdir probes)
  "$SHOAL" keygen -o "$dir/cluster.key"
  # The probes' port (by name) is the container port the --metrics argument listens on.
  tt_check "$(k8s_get '[p["containerPort"] for p in ctr["ports"] if p["name"] == ctr["livenessProbe"]["httpGet"]["port"]]')" = \
    "$(daemonset_args | sed -n 's/^--metrics=.*:\([0-9]*\)$/\1/p')" "the probes' port is not the --metrics port"
  tt_check "$(k8s_get 'ctr["readinessProbe"]["httpGet"]["port"] == ctr["livenessProbe"]["httpGet"]["port"]')" = True \
    "the probes use two ports"
  mapfile -t probes < <(k8s_get '[ctr[p]["httpGet"]["path"] for p in ("livenessProbe", "readinessProbe")]')
  tt_check "${probes[*]}" = "/healthz /readyz" "the probes are [${probes[*]}]"
  # A real shoald with its metrics listener; S3 unreachable, so it is alive and not ready.
  port=$(tt_free_port)
  metrics_port=$(tt_free_port)
  # Static keys, so the credential chain ends in the environment and asks no metadata service.
  env -i PATH="$PATH" AWS_ACCESS_KEY_ID=probe AWS_SECRET_ACCESS_KEY=probe AWS_EC2_METADATA_DISABLED=true \
    "$SHOALD" --bucket s3://probe-test --endpoint http://127.0.0.1:9 --cluster-key "$dir/cluster.key" \
    --cache-dir "$dir/cache" --control "$dir/shoald.sock" --bind "127.0.0.1:$port" \
    --metrics "127.0.0.1:$metrics_port" >"$dir/log" 2>&1 &
  local pid=$!
  tt_defer "kill $pid 2>/dev/null; wait $pid 2>/dev/null"
  for ((i = 0; i < 600; i++)); do
    code=$(http_code "http://127.0.0.1:$metrics_port/healthz")
    [ "$code" != 000 ] && break
    kill -0 "$pid" 2>/dev/null || { tail -n 5 "$dir/log" >&2; tt_fail "shoald exited"; }
    sleep 0.1
  done
  tt_check "$(http_code "http://127.0.0.1:$metrics_port${probes[0]}")" = 200 "the liveness probe ${probes[0]}"
  tt_check "$(http_code "http://127.0.0.1:$metrics_port${probes[1]}")" = 503 \
    "the readiness probe ${probes[1]} on a daemon that cannot reach S3"
  tt_check "$(http_code "http://127.0.0.1:$metrics_port/ready")" = 404 "a path shoald does not serve is not 404"
}

test_deploy_dockerfile_installs_the_package_the_build_makes_and_runs_shoald() {
  require_yaml
  local df=$deploy/Dockerfile deb=$SHOAL_DEB_DIR/shoal_${SHOAL_VERSION}_amd64.deb image tag
  tt_grep '^FROM debian:bookworm-slim$' "$df" "the image is not built on Debian 12 slim"
  # COPY's source, in the build context (the folder holding the package), matches the package.
  local src
  src=$(sed -n 's/^COPY \([^ ]*\) .*/\1/p' "$df")
  # shellcheck disable=SC2053
  [[ $(basename "$deb") == $src ]] || tt_fail "COPY $src does not match the package name $(basename "$deb")"
  tt_check "$(sed -n 's/^ENTRYPOINT \["\([^"]*\)"\]$/\1/p' "$df")" = /usr/bin/shoald "ENTRYPOINT is not /usr/bin/shoald"
  tt_grep '^CMD \["--config", "/etc/shoal/shoald.conf"\]$' "$df" "CMD does not read /etc/shoal/shoald.conf"
  # The package holds that shoald and that config file.
  [ -f "$deb" ] || tt_skip "no package at $deb (test_package_cpack_makes_the_deb makes it in the plain build)"
  local files
  files=$(dpkg-deb -c "$deb")
  grep -qE ' \./usr/bin/shoald$' <<<"$files" || tt_fail "the package has no /usr/bin/shoald"
  grep -qE ' \./etc/shoal/shoald.conf$' <<<"$files" || tt_fail "the package has no /etc/shoal/shoald.conf"
  # The image's name: the Dockerfile's build command tags what the DaemonSet runs, and the docs
  # name the same image.
  image=$(k8s_get 'ctr["image"]')
  tag=$(sed -n 's/^#.*docker build .*-t \([^ ]*\) .*/\1/p' "$df")
  tt_check "$tag" = "$image" "the Dockerfile builds $tag, the DaemonSet runs $image"
  tt_check "${image##*:}" = "$SHOAL_VERSION" "the image tag ${image##*:} is not the version $SHOAL_VERSION"
  local other
  other=$(grep -rhoE 'image: *[^ ]*shoal[^ ]*|-t [^ ]*shoal:[^ ]+' "$TT_SOURCE_DIR/docs" "$TT_SOURCE_DIR/README.md" |
    sed -E 's/^(image: *|-t )//' | sort -u | grep -vxF "$image" || true)
  tt_check -z "$other" "the docs name other shoal images than $image: $other"
  tt_check "$(grep -rhoE 'image: *[^ ]*shoal[^ ]*' "$TT_SOURCE_DIR/docs" | wc -l)" -ge 1 "the docs name no shoal image"
}

tt_main "$@"
