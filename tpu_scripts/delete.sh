#!/usr/bin/env bash
# Delete the TPU VM, or the queued resource together with its nodes.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

USAGE="usage: tpu_scripts/delete.sh --name NAME --zone ZONE [--slices N] [--queued] [--yes]

One slice without --queued: gcloud compute tpus tpu-vm delete NAME. --queued or --slices N>1:
gcloud compute tpus queued-resources delete QR_ID --force (deletes its nodes too). Billing
stops when the delete finishes; the gs:// work directory (checkpoints, metrics) stays.

Script flags:
  --yes                    do not ask for confirmation [TPU_YES=1]; needed without a terminal"

TPU_YES=${TPU_YES:-0}

script_flag() {
  case $FLAG in
    --yes | -y) switch TPU_YES ;;
    *) return 1 ;;
  esac
}

parse_flags "$@"
check_bool TPU_YES
require TPU_NAME TPU_ZONE
gcloud_loc

if ((TPU_QUEUED)); then
  what="queued resource $TPU_QR_ID and its $TPU_SLICES node(s)"
  cmd=(gcloud compute tpus queued-resources delete "$TPU_QR_ID" "${LOC[@]}" --force --quiet)
else
  what="TPU VM $TPU_NAME"
  cmd=(gcloud compute tpus tpu-vm delete "$TPU_NAME" "${LOC[@]}" --quiet)
fi

if ((!TPU_DRY_RUN && !TPU_YES)); then
  [[ -t 0 ]] || die "refusing to delete $what without --yes (no terminal to ask on)"
  read -r -p "delete $what in $TPU_ZONE? type the name to confirm: " answer
  [[ $answer == "$TPU_NAME" || $answer == "$TPU_QR_ID" ]] || die "not confirmed; nothing deleted"
fi
run "${cmd[@]}"
