#!/bin/bash
# virt-dib phase runner (assets/run-phase.bash). Protocol: src/phases/runner-script.ts.
set -u
shopt -s lastpipe 2>/dev/null
. "$1" || { echo "virt-dib runner: cannot read $1" >&2; exit 90; }
if [ -n "${VDIB_EXTRA_ENV:-}" ] && [ -f "$VDIB_EXTRA_ENV" ]; then . "$VDIB_EXTRA_ENV"; fi
# The run's own values come as arguments, so the control files stay the same from build to build.
if [ $# -ge 2 ]; then VDIB_TOKEN=$2; VDIB_LOG=${3:-}; fi
T=$VDIB_TOKEN
if [ "${VDIB_WHERE:-}" != chroot ]; then
  # As diskimage-builder: die and _ps4 (for xtrace) are exported to scripts outside the chroot.
  [ -f "${_LIB:-}/die" ] && . "$_LIB/die"
  _ps4() {
    IFS=" " called=($(caller 0))
    local f
    f=$(readlink -f "${called[2]}")
    printf "%-80s " "${f##*site-packages/}:${called[1]}:${called[0]}"
  }
  export -f _ps4
  export PS4='+ $(_ps4):   '
  export -f get_image_element_array
else
  export -n -f get_image_element_array 2>/dev/null || true
fi
# An empty console means our own stdout (the host case, where stdout may be a socket).
if [ -z "${VDIB_CONSOLE:-}" ]; then exec 7>&1; else exec 7>>"$VDIB_CONSOLE" || exec 7>/dev/null; fi
if [ -n "${VDIB_LOG:-}" ]; then exec 8>>"$VDIB_LOG" || exec 8>/dev/null; else exec 8>/dev/null; fi
say() { printf '%s|S|%s\n' "$T" "$*"; }
live() { printf '%s|L|%s\n' "$T" "$*" >&7; }
now_ms() {
  if [ -n "${EPOCHREALTIME:-}" ]; then local t=${EPOCHREALTIME/[.,]/}; echo $((t / 1000)); else date +%s%3N; fi
}

dir=${VDIB_SCRIPTS_DIR:-$VDIB_HOOKS_DIR/$VDIB_HOOK}
scripts=()
if [ -d "$dir" ]; then
  for f in "$dir"/*; do
    n=${f##*/}
    [[ $n =~ ^[0-9A-Za-z_-]+$ ]] || continue
    [ -f "$f" ] && [ -x "$f" ] || continue
    excluded=0
    for x in ${VDIB_EXCLUDE:-}; do [ "$x" = "$n" ] && excluded=1; done
    [ $excluded = 1 ] && continue
    printf '%s\n' "$n"
  done | LC_ALL=C sort -n | while IFS= read -r n; do scripts+=("$n"); done
fi
say "list|${scripts[*]:-}"
live "list|${scripts[*]:-}"
printf 'Running hooks for %s: %s\n' "$VDIB_HOOK" "${scripts[*]:-}" >&8

(
  set -eu -o pipefail
  current_env=
  trap 'rc=$?; if [ $rc -ne 0 ] && [ -n "$current_env" ]; then say "envfail|$current_env|$rc"; fi' EXIT
  envdir=${VDIB_ENV_DIR:-$VDIB_HOOKS_DIR/environment.d}
  if [ -d "$envdir" ]; then
    for f in "$envdir"/*; do
      n=${f##*/}
      [[ $n =~ ^[0-9A-Za-z_.-]+$ ]] && [ -f "$f" ] || continue
      current_env=$n
      say "env|$n"
      if [ "${VDIB_TRACE:-0}" = 1 ]; then set -x; fi
      source "$f"
      set +x
    done
  fi
  current_env=
  cwd=${VDIB_CWD:-/}
  for s in ${scripts[@]+"${scripts[@]}"}; do
    live "start|$s"
    printf 'Running %s/%s\n' "$VDIB_HOOK" "$s" >&8
    t0=$(now_ms)
    tail=()
    set +e
    # The script's status comes as a last line: a background process the script leaves holding
    # its output must not keep the phase waiting for the end of the pipe.
    xrc=
    ( cd "$cwd" && unset OLDPWD && "$dir/$s"; printf '%s|X|%s\n' "$T" "$?" ) 2>&1 | while IFS= read -r line || [ -n "$line" ]; do
      case $line in *"$T|X|"*)
        xrc=${line##*"$T|X|"}
        line=${line%%"$T|X|"*}
        [ -n "$line" ] || break
        ;;
      esac
      printf '%s|L|o|%s\n' "$T" "$line" >&7
      printf '%s\n' "$line" >&8
      tail+=("$line")
      [ ${#tail[@]} -gt 40 ] && tail=("${tail[@]:1}")
      case $line in IMAGE_BLOCK_DEVICE=*) say "var|IMAGE_BLOCK_DEVICE|${line#IMAGE_BLOCK_DEVICE=}" ;; esac
      [ -z "$xrc" ] || break
    done
    rc=${PIPESTATUS[0]}
    [ -z "$xrc" ] || rc=$xrc
    set -e
    ms=$(( $(now_ms) - t0 ))
    live "end|$s|$rc|$ms"
    say "end|$s|$rc|$ms"
    printf '%s completed with status %s after %s ms\n' "$s" "$rc" "$ms" >&8
    if [ "$rc" -ne 0 ]; then
      for l in ${tail[@]+"${tail[@]}"}; do say "tail|$l"; done
      trap - EXIT
      exit "$rc"
    fi
  done
  trap - EXIT
)
rc=$?
say "done|$rc"
exit 0
