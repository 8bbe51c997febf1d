#!/usr/bin/env bash
# Create a TPU VM (tpu-vm create) or a queued resource (one slice, or several with
# --node-count/--node-prefix). Arguments after `--` go to gcloud's create command unchanged.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

USAGE="usage: tpu_scripts/create.sh --name NAME --zone ZONE --accelerator-type TYPE [--slices N]
                            [--queued] [--spot|--preemptible|--reserved] [--wait] [-- GCLOUD_FLAGS...]

Creates the TPU. One slice without --queued: gcloud compute tpus tpu-vm create NAME (fails at
once when there is no capacity). --queued or --slices N>1: gcloud compute tpus queued-resources
create (waits in Google's queue until capacity is free; multi-slice needs it); the nodes are
NAME (one slice) or NAME-0 .. NAME-(N-1). Check the request with tpu_scripts/status.sh.

Script flags:
  --wait                   poll until the TPU VM is READY / the queued resource is ACTIVE
                           [TPU_WAIT=1; poll every TPU_POLL_SECONDS, default 30]"

TPU_WAIT=${TPU_WAIT:-0}
TPU_POLL_SECONDS=${TPU_POLL_SECONDS:-30}

script_flag() {
  case $FLAG in
    --wait) switch TPU_WAIT ;;
    *) return 1 ;;
  esac
}

parse_flags "$@"
check_bool TPU_WAIT
[[ $TPU_POLL_SECONDS =~ ^[1-9][0-9]*$ ]] || die "TPU_POLL_SECONDS must be a positive integer"
require TPU_NAME TPU_ZONE TPU_ACCELERATOR
TPU_RUNTIME=${TPU_RUNTIME:-$(default_runtime "$TPU_ACCELERATOR")}
if ((TPU_SPOT + TPU_PREEMPTIBLE + TPU_RESERVED > 1)); then
  die "--spot, --preemptible and --reserved exclude each other"
fi
gcloud_loc

if ((TPU_QUEUED)); then
  if ((TPU_PREEMPTIBLE)); then die "--preemptible is for tpu-vm create; queued resources take --spot"; fi
  cmd=(gcloud compute tpus queued-resources create "$TPU_QR_ID" "${LOC[@]}"
    --accelerator-type="$TPU_ACCELERATOR" --runtime-version="$TPU_RUNTIME")
  if ((TPU_SLICES > 1)); then
    cmd+=(--node-count="$TPU_SLICES" --node-prefix="$TPU_NAME")
  else
    cmd+=(--node-id="$TPU_NAME")
  fi
  if ((TPU_SPOT)); then cmd+=(--spot); fi
  if ((TPU_RESERVED)); then cmd+=(--reserved); fi
  describe=(gcloud compute tpus queued-resources describe "$TPU_QR_ID" "${LOC[@]}"
    '--format=value(state.state)')
  ready=ACTIVE
else
  cmd=(gcloud compute tpus tpu-vm create "$TPU_NAME" "${LOC[@]}"
    --accelerator-type="$TPU_ACCELERATOR" --version="$TPU_RUNTIME")
  if ((TPU_SPOT)); then cmd+=(--spot); fi
  if ((TPU_PREEMPTIBLE)); then cmd+=(--preemptible); fi
  if ((TPU_RESERVED)); then cmd+=(--reserved); fi
  describe=(gcloud compute tpus tpu-vm describe "$TPU_NAME" "${LOC[@]}" '--format=value(state)')
  ready=READY
fi
run "${cmd[@]}" "${POSITIONAL[@]}"

if ((TPU_WAIT)); then
  if ((TPU_DRY_RUN)); then
    run "${describe[@]}"
    exit 0
  fi
  while true; do
    state=$(run "${describe[@]}")
    echo "state: $state" >&2
    case $state in
      "$ready") break ;;
      FAILED | SUSPENDED | PREEMPTED) die "$TPU_NAME is $state" ;;
    esac
    sleep "$TPU_POLL_SECONDS"
  done
fi
