#!/usr/bin/env bash
# The files the package installs beside the programs, checked against the programs themselves:
# the man pages describe every option of each --help and render without a warning, the sample
# /etc/shoal/shoald.conf shows every option of shoald and is accepted once filled in, and bash
# completion offers the options and commands each --help lists.
#
# Environment (set by tests/package/CMakeLists.txt): SHOALD, SHOAL, SHOAL_SIM (the built
# programs) and SHOAL_MAN_DIR (the man pages as configured for the build).
source "$(dirname "$0")/../support/tt.sh"
pkg=$TT_SOURCE_DIR/packaging

# The long options a --help lists ("  --name ..." or "  -o, --name ..."), one a line; for shoal,
# those of every command's help too.
help_options() {
  {
    "$1" --help
    if [ "$1" = "$SHOAL" ]; then
      for cmd in $(shoal_commands); do "$1" help "$cmd"; done
    fi
  } | sed -nE 's/^  (-[a-z], )?--([a-z][a-z0-9-]*).*/\2/p' | sort -u
}

# The commands `shoal --help` lists, one a line.
shoal_commands() {
  "$SHOAL" --help | sed -n '/^commands:/,/^$/s/^  \([a-z][a-z]*\) .*/\1/p'
}

# man(7) spells a dash \- ; "--cache-size" is written \-\-cache\-size.
man_has_option() {
  local escaped=${2//-/\\-}
  grep -qF -- "\\-\\-$escaped" "$1"
}

test_package_man_pages_describe_every_option_and_render_cleanly() {
  local page prog opt n missing=()
  for pair in "shoald.8:$SHOALD" "shoal.1:$SHOAL" "shoal-sim.1:$SHOAL_SIM"; do
    page=$SHOAL_MAN_DIR/${pair%%:*}
    prog=${pair#*:}
    n=0
    while read -r opt; do
      n=$((n + 1))
      man_has_option "$page" "$opt" || missing+=("${pair%%:*}: --$opt")
    done < <(help_options "$prog")
    tt_check "$n" -ge 5 "read only $n options from $prog --help"
    # The version the program prints is the one on the page's title line.
    tt_grep "^\.TH .* \"shoal $("$prog" --version | cut -d' ' -f2)\"" "$page" "the page names another version"
    local warnings
    warnings=$(LC_ALL=C.UTF-8 groff -man -ww -z "$page" 2>&1)
    tt_check -z "$warnings" "groff warns about $page: $warnings"
  done
  # shoal's commands are in its page too.
  while read -r cmd; do
    grep -qE "^\.B(I)? $cmd( |$)" "$SHOAL_MAN_DIR/shoal.1" || missing+=("shoal.1: command $cmd")
  done < <(shoal_commands)
  tt_check ${#missing[@]} = 0 "options or commands the man pages do not describe: ${missing[*]:-}"
}

# The shoald options that are not config file keys.
not_keys='^(config|check-config|help|version)$'

test_package_sample_config_shows_every_option_and_is_accepted_once_filled_in() {
  local conf=$pkg/shoald.conf dir keys missing=()
  dir=$(tt_tmpdir sample-config)
  # Every key of shoald appears as a commented example "#key = value".
  while read -r opt; do
    grep -qE "^#$opt = " "$conf" || missing+=("$opt")
  done < <(help_options "$SHOALD" | grep -vE "$not_keys")
  tt_check ${#missing[@]} = 0 "keys the sample does not show: ${missing[*]:-}"
  # As shipped, every line is a comment: the daemon refuses it, naming what to set first.
  keys=$(grep -cvE '^(#.*)?$' "$conf" || true)
  tt_check "$keys" = 0 "the sample sets $keys keys; it must only show them"
  local out rc=0
  out=$("$SHOALD" --check-config --config "$conf" 2>&1) || rc=$?
  tt_check "$rc" = 2 "the empty sample: exit $rc ($out)"
  [[ $out == *"--bucket: required"* ]] || tt_fail "the empty sample: '$out' does not name --bucket"
  # With every example uncommented (the key file replaced by a real one), it is valid.
  "$SHOAL" keygen -o "$dir/cluster.key"
  sed -E 's/^#([a-z][a-z-]*) = /\1 = /; s|^cluster-key = .*|cluster-key = '"$dir"'/cluster.key|' "$conf" >"$dir/filled.conf"
  out=$("$SHOALD" --check-config --config "$dir/filled.conf" 2>&1) || tt_fail "the filled-in sample is refused: $out"
  [[ $out == *"configuration OK"* ]] || tt_fail "unexpected answer: $out"
}

# complete_words COMMAND-LINE: what bash completion offers for the last word of the line.
complete_words() {
  local line=$1
  bash -c '
    source /usr/share/bash-completion/bash_completion
    source "$1"
    read -r -a COMP_WORDS <<<"$2"
    [[ $2 == *" " ]] && COMP_WORDS+=("")
    COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
    COMP_LINE=$2 COMP_POINT=${#2}
    _${COMP_WORDS[0]} "${COMP_WORDS[0]}" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]:-}"
    printf "%s\n" "${COMPREPLY[@]}"
  ' complete "$pkg/completion/${line%% *}" "$line"
}

test_package_bash_completion_offers_the_options_and_commands_of_the_help() {
  [ -f /usr/share/bash-completion/bash_completion ] || tt_skip "bash-completion is not installed (scripts/deps installs it)"
  local bindir
  bindir=$(tt_tmpdir completion)
  ln -s "$SHOALD" "$bindir/shoald"
  ln -s "$SHOAL" "$bindir/shoal"
  export PATH=$bindir:$PATH
  local got
  got=$(complete_words "shoald --cache-" | sort | tr '\n' ' ')
  tt_check "$got" = "--cache-dir --cache-free-space --cache-size " "shoald --cache-<TAB> offers: $got"
  got=$(complete_words "shoald --log-level " | sort | tr '\n' ' ')
  tt_check "$got" = "debug error info warn " "shoald --log-level <TAB> offers: $got"
  tt_check "$(complete_words "shoald --" | wc -l)" = "$(help_options "$SHOALD" | wc -l)" \
    "shoald --<TAB> does not offer every option of shoald --help"
  got=$(complete_words "shoal " | sort | tr '\n' ' ')
  tt_check "$got" = "drain forget get help keygen leave ls preload stats status wait " "shoal <TAB> offers: $got"
  got=$(complete_words "shoal --json st" | sort | tr '\n' ' ')
  tt_check "$got" = "stats status " "shoal --json st<TAB> offers: $got"
  got=$(complete_words "shoal get " | tr '\n' ' ')
  tt_check "$got" = "s3:// " "shoal get <TAB> offers: $got"
  got=$(complete_words "shoal status --j" | tr '\n' ' ')
  tt_check "$got" = "--json " "shoal status --j<TAB> offers: $got"
  got=$(complete_words "shoal preload s3://b/p --j" | tr '\n' ' ')
  tt_check "$got" = "--json " "shoal preload s3://b/p --j<TAB> offers: $got"
  got=$(complete_words "shoald --drain" | tr '\n' ' ')
  tt_check "$got" = "--drain-timeout " "shoald --drain<TAB> offers: $got"
  got=$(complete_words "shoal wait --t" | tr '\n' ' ')
  tt_check "$got" = "--timeout " "shoal wait --t<TAB> offers: $got"
  got=$(complete_words "shoal stats --" | sort | tr '\n' ' ')
  tt_check "$got" = "--control --count --help --interval --json --version --watch " "shoal stats --<TAB> offers: $got"
  got=$(complete_words "shoal help st" | sort | tr '\n' ' ')
  tt_check "$got" = "stats status " "shoal help st<TAB> offers: $got"
}

tt_main "$@"
