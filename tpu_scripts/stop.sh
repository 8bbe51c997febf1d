#!/usr/bin/env bash
# Stop the job on every worker of every slice and release the TPU devices.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

USAGE="usage: tpu_scripts/stop.sh --name NAME --zone ZONE [--grace SECONDS] [--force]

On all workers: SIGTERM to the job's process group (pid from LOG_DIR/job.pid; the trainer saves
a checkpoint at the next step boundary and exits), SIGKILL after --grace seconds; then kills
every process still holding /dev/accel* (v2-v4) or /dev/vfio/* (v5e, v5p, v6e) and removes a
stale /tmp/libtpu_lockfile, so the next launch finds the TPU free.

Script flags:
  --grace SECONDS          wait this long after SIGTERM [TPU_STOP_GRACE, default 120]
  --force                  no grace: SIGKILL at once (no checkpoint)"

TPU_STOP_GRACE=${TPU_STOP_GRACE:-120}
# Environment only (tests point them elsewhere): the TPU device files and libtpu's lock file.
TPU_DEVICE_GLOBS=${TPU_DEVICE_GLOBS:-/dev/accel* /dev/vfio/*}
TPU_LIBTPU_LOCKFILE=${TPU_LIBTPU_LOCKFILE:-/tmp/libtpu_lockfile}

script_flag() {
  case $FLAG in
    --grace) value TPU_STOP_GRACE ;;
    --force) TPU_STOP_GRACE=0 ;;
    *) return 1 ;;
  esac
}

parse_flags "$@"
require TPU_NAME TPU_ZONE
[[ $TPU_STOP_GRACE =~ ^[0-9]+$ ]] || die "--grace must be a number of seconds, got '$TPU_STOP_GRACE'"

stop_script() {
  cat <<EOF
logs=$(rpath "$TPU_LOG_DIR")
grace=$TPU_STOP_GRACE
maybe_sudo() { if sudo -n true 2>/dev/null; then sudo -n "\$@"; else "\$@"; fi; }
pid=\$(cat "\$logs/job.pid" 2>/dev/null || true)
if [ -n "\$pid" ] && kill -0 "\$pid" 2>/dev/null; then
  if [ "\$grace" -gt 0 ]; then
    echo "\$(hostname): SIGTERM to job \$pid, waiting up to \${grace}s"
    kill -TERM -- "-\$pid" 2>/dev/null || kill -TERM "\$pid" 2>/dev/null || true
    for _ in \$(seq "\$((grace * 10))"); do kill -0 "\$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  kill -KILL -- "-\$pid" 2>/dev/null || kill -KILL "\$pid" 2>/dev/null || true
fi
rm -f "\$logs/job.pid"
devices=""
for f in $TPU_DEVICE_GLOBS; do
  if [ -c "\$f" ] && [ "\$f" != /dev/vfio/vfio ]; then devices="\$devices \$f"; fi
done
holders=""
if [ -n "\$devices" ]; then
  if command -v lsof >/dev/null; then
    holders=\$(maybe_sudo lsof -t \$devices 2>/dev/null | sort -u | tr "\\n" " " || true)
  elif command -v fuser >/dev/null; then
    holders=\$(maybe_sudo fuser \$devices 2>/dev/null | tr -s " " || true)
  fi
fi
holders=\$(echo \$holders)
if [ -n "\$holders" ]; then
  echo "\$(hostname): killing processes holding the TPU: \$holders"
  maybe_sudo kill -KILL \$holders 2>/dev/null || true
fi
maybe_sudo rm -f $(q "$TPU_LIBTPU_LOCKFILE")
echo "\$(hostname): stopped, TPU released"
EOF
}

stop_node() {
  remote_ssh "$1" all "$(stop_script)"
}

for_each_node stop_node
