#!/usr/bin/env bash
# Print or follow the job log of one worker (default worker 0 of slice 0) or of all workers.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

USAGE="usage: tpu_scripts/logs.sh --name NAME --zone ZONE [--worker W|all] [--slice S|all]
                          [--lines N] [--follow]

tail of LOG_DIR/latest.log (the newest launch) on the chosen workers; with --worker all each
line starts with the worker's hostname. Process 0 (worker 0 of slice 0) writes the metrics;
the other workers' logs matter when they fail. Ctrl-C ends --follow.

Script flags:
  --worker W|all           worker number in each slice, or all [default 0]
  --slice S|all            slice number (node NAME-S), or all [default 0]
  --lines N                lines to show [default 100]
  --follow                 keep following (tail -F)"

WORKER=0
SLICE=0
LINES=100
FOLLOW=0

script_flag() {
  case $FLAG in
    --worker) value WORKER ;;
    --slice) value SLICE ;;
    --lines) value LINES ;;
    --follow | -f) switch FOLLOW ;;
    *) return 1 ;;
  esac
}

parse_flags "$@"
require TPU_NAME TPU_ZONE
[[ $WORKER =~ ^([0-9]+|all)$ ]] || die "--worker must be a number or all, got '$WORKER'"
[[ $SLICE =~ ^([0-9]+|all)$ ]] || die "--slice must be a number or all, got '$SLICE'"
[[ $LINES =~ ^[0-9]+$ ]] || die "--lines must be a number, got '$LINES'"
if [[ $SLICE != all ]] && ((SLICE >= TPU_SLICES)); then
  die "--slice $SLICE: there are $TPU_SLICES slice(s)"
fi

logs_script() {
  local tail_args="-n $LINES" prefix=''
  if ((FOLLOW)); then tail_args+=' -F'; fi
  # shellcheck disable=SC2016  # expanded by the remote shell
  if [[ $WORKER == all ]]; then prefix=' | while IFS= read -r line; do echo "$(hostname): $line"; done'; fi
  cat <<EOF
log=$(rpath "$TPU_LOG_DIR")/latest.log
if [ ! -e "\$log" ]; then echo "\$(hostname): no log at \$log (nothing launched?)" >&2; exit 1; fi
tail $tail_args "\$log"$prefix
EOF
}

logs_node() {
  remote_ssh "$1" "$WORKER" "$(logs_script)"
}

if [[ $SLICE == all ]]; then
  for_each_node logs_node
else
  nodes
  logs_node "${NODES[SLICE]}"
fi
