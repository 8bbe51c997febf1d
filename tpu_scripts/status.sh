#!/usr/bin/env bash
# Show the TPU (or queued resource) state and, per worker, whether the job runs and its last
# log line.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

USAGE="usage: tpu_scripts/status.sh --name NAME --zone ZONE [--slices N] [--queued] [--no-workers]

gcloud ... describe of the TPU VM (or of the queued resource and then its nodes), then on all
workers: running/not running with the pid from LOG_DIR/job.pid, and the last line of
LOG_DIR/latest.log.

Script flags:
  --no-workers             only the gcloud describe, no ssh (e.g. while still queued)"

WORKERS=1

script_flag() {
  case $FLAG in
    --no-workers) WORKERS=0 ;;
    *) return 1 ;;
  esac
}

parse_flags "$@"
require TPU_NAME TPU_ZONE
gcloud_loc
nodes

if ((TPU_QUEUED)); then
  run gcloud compute tpus queued-resources describe "$TPU_QR_ID" "${LOC[@]}"
fi
for node in "${NODES[@]}"; do
  run gcloud compute tpus tpu-vm describe "$node" "${LOC[@]}" \
    '--format=value(name.basename(),state,health,acceleratorType)' ||
    warn "cannot describe node $node (queued resource not ACTIVE yet?)"
done
if ((!WORKERS)); then exit 0; fi

status_script() {
  cat <<EOF
logs=$(rpath "$TPU_LOG_DIR")
pid=\$(cat "\$logs/job.pid" 2>/dev/null || true)
if [ -n "\$pid" ] && kill -0 "\$pid" 2>/dev/null; then state="running (pid \$pid)"; else state="not running"; fi
echo "\$(hostname): \$state | \$(tail -n 1 "\$logs/latest.log" 2>/dev/null || echo 'no log')"
EOF
}

status_node() {
  remote_ssh "$1" all "$(status_script)"
}

for_each_node status_node
