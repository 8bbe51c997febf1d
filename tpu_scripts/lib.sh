# shellcheck shell=bash
# Shared by every tpu_scripts/*.sh (sourced, never run): settings from flags or environment
# variables, flag parsing, quoting, the dry-run aware command runner, the list of TPU nodes
# (one per slice) and the per-node ssh/scp wrappers.
#
# Precedence: flag > environment variable > default. Every gcloud call goes through `run`, so
# `--dry-run` prints exactly the commands a real run would execute and executes none.

if ((BASH_VERSINFO[0] < 4 || (BASH_VERSINFO[0] == 4 && BASH_VERSINFO[1] < 4))); then
  echo "error: tpu_scripts need bash >= 4.4 (macOS: brew install bash)" >&2
  exit 2
fi

# ---- settings (environment variables; flags override them in parse_flags) ----
TPU_NAME=${TPU_NAME:-}                  # TPU VM name; node prefix for multi-slice
TPU_ZONE=${TPU_ZONE:-}                  # e.g. us-central2-b
TPU_PROJECT=${TPU_PROJECT:-}            # empty: gcloud's configured project
TPU_ACCELERATOR=${TPU_ACCELERATOR:-}    # e.g. v4-32, v5litepod-256, v5p-128, v6e-64
TPU_RUNTIME=${TPU_RUNTIME:-}            # empty: chosen from the accelerator generation
TPU_SPOT=${TPU_SPOT:-0}                 # 1: Spot capacity (can be preempted)
TPU_PREEMPTIBLE=${TPU_PREEMPTIBLE:-0}   # 1: legacy preemptible TPU VM (not queued resources)
TPU_RESERVED=${TPU_RESERVED:-0}         # 1: use a reservation (queued resources)
TPU_SLICES=${TPU_SLICES:-1}             # >1: multi-slice queued resource with that many nodes
TPU_QUEUED=${TPU_QUEUED:-0}             # 1: queued resource even for one slice
TPU_QR_ID=${TPU_QR_ID:-}                # queued resource id; empty: TPU_NAME
TPU_REMOTE_DIR=${TPU_REMOTE_DIR:-vidlm}       # code on the workers (relative: under $HOME)
TPU_VENV=${TPU_VENV:-vidlm-venv}              # virtual environment on the workers
TPU_LOG_DIR=${TPU_LOG_DIR:-vidlm-logs}        # job logs and pid file on the workers
TPU_SSH_ARGS=${TPU_SSH_ARGS:-}        # extra tpu-vm ssh/scp arguments, e.g. --internal-ip
TPU_PARALLEL=${TPU_PARALLEL:-1}         # 1: run per-node (per-slice) commands concurrently
TPU_DRY_RUN=${TPU_DRY_RUN:-0}           # 1: print the commands, run nothing

COMMON_HELP="Common flags (environment variable in brackets; flags win):
  --name NAME              TPU VM name, node prefix for multi-slice [TPU_NAME]
  --zone ZONE              zone, e.g. us-central2-b [TPU_ZONE]
  --project PROJECT        project id; default: gcloud's configured project [TPU_PROJECT]
  --accelerator-type TYPE  e.g. v4-32, v5litepod-256, v6e-64 [TPU_ACCELERATOR]
  --runtime-version VER    TPU software version; default from the generation [TPU_RUNTIME]
  --spot                   Spot capacity [TPU_SPOT=1]
  --preemptible            preemptible TPU VM (tpu-vm create only) [TPU_PREEMPTIBLE=1]
  --reserved               use a reservation [TPU_RESERVED=1]
  --slices N               number of slices; N>1 means a multi-slice queued resource
                           whose nodes are NAME-0 .. NAME-(N-1) [TPU_SLICES, default 1]
  --queued                 queued resource even for one slice (node NAME) [TPU_QUEUED=1]
  --qr-id ID               queued resource id; default NAME [TPU_QR_ID]
  --remote-dir DIR         code directory on the workers; relative = under \$HOME
                           [TPU_REMOTE_DIR, default vidlm]
  --venv DIR               virtual environment on the workers [TPU_VENV, default vidlm-venv]
  --log-dir DIR            job logs + pid file on the workers [TPU_LOG_DIR, default vidlm-logs]
  --ssh-arg ARG            extra argument for gcloud compute tpus tpu-vm ssh/scp, repeatable,
                           e.g. --internal-ip, --tunnel-through-iap, --ssh-flag=-v
                           [TPU_SSH_ARGS, space separated]
  --no-parallel            run the per-slice commands one after another [TPU_PARALLEL=0]
  --dry-run                print the exact commands, run none [TPU_DRY_RUN=1]
  -h, --help               this help"

die() {
  echo "error: $*" >&2
  exit 2
}

warn() {
  echo "warning: $*" >&2
}

usage() {
  printf '%s\n\n%s\n' "$USAGE" "$COMMON_HELP"
}

# q STRING: STRING quoted for a POSIX shell (single quotes; bare when nothing needs quoting).
q() {
  local s=$1 sq="'\\''"
  if [[ $s =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
    printf '%s' "$s"
  else
    printf "'%s'" "${s//\'/$sq}"
  fi
}

# quote_all ARGS...: the arguments as one shell-quoted line.
quote_all() {
  local out=() a
  for a in "$@"; do out+=("$(q "$a")"); done
  printf '%s' "${out[*]}"
}

# rpath PATH: a worker path for a remote script; relative paths live under the remote $HOME.
rpath() {
  # shellcheck disable=SC2016  # $HOME is for the remote shell
  if [[ $1 == /* ]]; then q "$1"; else printf '"$HOME"/%s' "$(q "$1")"; fi
}

# run CMD ARGS...: print (dry run) or echo to stderr and execute.
run() {
  if ((TPU_DRY_RUN)); then
    quote_all "$@"
    echo
    return 0
  fi
  echo "+ $(quote_all "$@")" >&2
  "$@"
}

# ---- flag parsing ----
# Scripts may define `script_flag` (return 0 when they handled "$FLAG", using `value VAR` to
# read its argument) and set ALLOW_POSITIONAL=1 to accept arguments after `--`.
ARGS=()
I=0
FLAG=''
FLAG_VALUE=''
HAS_VALUE=0
POSITIONAL=()
SSH_ARGS=()
read -r -a SSH_ARGS <<<"$TPU_SSH_ARGS"

# value VAR: the current flag's argument (--flag=x or --flag x) into VAR.
value() {
  if ((HAS_VALUE)); then
    printf -v "$1" '%s' "$FLAG_VALUE"
  elif ((I < ${#ARGS[@]})); then
    printf -v "$1" '%s' "${ARGS[I]}"
    I=$((I + 1))
  else
    die "$FLAG needs a value"
  fi
}

# switch VAR: a boolean flag (--spot, or --spot=0/1).
switch() {
  if ((HAS_VALUE)); then
    [[ $FLAG_VALUE == [01] ]] || die "$FLAG takes no value (or =0/=1), got '$FLAG_VALUE'"
    printf -v "$1" '%s' "$FLAG_VALUE"
  else
    printf -v "$1" '1'
  fi
}

parse_flags() {
  ARGS=("$@")
  I=0
  local arg extra
  while ((I < ${#ARGS[@]})); do
    arg=${ARGS[I]}
    I=$((I + 1))
    if [[ $arg == --*=* ]]; then
      FLAG=${arg%%=*} FLAG_VALUE=${arg#*=} HAS_VALUE=1
    else
      FLAG=$arg FLAG_VALUE='' HAS_VALUE=0
    fi
    case $FLAG in
      -h | --help) usage; exit 0 ;;
      --) POSITIONAL+=("${ARGS[@]:I}"); break ;;
      --name) value TPU_NAME ;;
      --zone) value TPU_ZONE ;;
      --project) value TPU_PROJECT ;;
      --accelerator-type) value TPU_ACCELERATOR ;;
      --runtime-version) value TPU_RUNTIME ;;
      --spot) switch TPU_SPOT ;;
      --preemptible) switch TPU_PREEMPTIBLE ;;
      --reserved) switch TPU_RESERVED ;;
      --slices) value TPU_SLICES ;;
      --queued) switch TPU_QUEUED ;;
      --qr-id) value TPU_QR_ID ;;
      --remote-dir) value TPU_REMOTE_DIR ;;
      --venv) value TPU_VENV ;;
      --log-dir) value TPU_LOG_DIR ;;
      --ssh-arg) value extra; SSH_ARGS+=("$extra") ;;
      --no-parallel) TPU_PARALLEL=0 ;;
      --dry-run) switch TPU_DRY_RUN ;;
      *)
        if declare -F script_flag >/dev/null && script_flag; then
          continue
        fi
        if [[ $arg != -* && ${ALLOW_POSITIONAL:-0} == 1 ]]; then
          POSITIONAL+=("$arg")
          continue
        fi
        die "unknown argument '$arg' (see --help)"
        ;;
    esac
  done
  check_bool TPU_SPOT TPU_PREEMPTIBLE TPU_RESERVED TPU_QUEUED TPU_PARALLEL TPU_DRY_RUN
  [[ $TPU_SLICES =~ ^[1-9][0-9]*$ ]] || die "--slices (TPU_SLICES) must be a positive integer, got '$TPU_SLICES'"
  TPU_QR_ID=${TPU_QR_ID:-$TPU_NAME}
  if ((TPU_SLICES > 1)); then TPU_QUEUED=1; fi
}

# check_bool VAR...: each is 0 or 1 (checked before any arithmetic sees an environment value).
check_bool() {
  local var
  for var in "$@"; do
    [[ ${!var} == [01] ]] || die "$var must be 0 or 1, got '${!var}'"
  done
}

# require VAR...: fail (before any command runs) naming each missing setting.
require() {
  local var missing=()
  for var in "$@"; do
    [[ -n ${!var:-} ]] || missing+=("$var")
  done
  ((${#missing[@]} == 0)) && return 0
  for var in "${missing[@]}"; do
    echo "error: missing setting $var: pass $(flag_for "$var") or set $var" >&2
  done
  exit 2
}

flag_for() {
  case $1 in
    TPU_NAME) echo '--name' ;;
    TPU_ZONE) echo '--zone' ;;
    TPU_PROJECT) echo '--project' ;;
    TPU_ACCELERATOR) echo '--accelerator-type' ;;
    TPU_RUNTIME) echo '--runtime-version' ;;
    *) local f=${1#TPU_}; f=${f,,}; echo "--${f//_/-}" ;;
  esac
}

# ---- gcloud helpers ----
# gcloud_loc: the zone/project flags every TPU command takes.
gcloud_loc() {
  LOC=(--zone="$TPU_ZONE")
  if [[ -n $TPU_PROJECT ]]; then LOC+=(--project="$TPU_PROJECT"); fi
}

# nodes: NODES=(one TPU node per slice): NAME, or NAME-0 .. NAME-(N-1) for N slices
# (the ids `queued-resources create --node-count=N --node-prefix=NAME` gives them).
nodes() {
  NODES=()
  if ((TPU_SLICES > 1)); then
    local i
    for ((i = 0; i < TPU_SLICES; i++)); do NODES+=("$TPU_NAME-$i"); done
  else
    NODES=("$TPU_NAME")
  fi
}

# remote_ssh NODE WORKER SCRIPT: run a bash script on WORKER (a number or `all`) of NODE.
remote_ssh() {
  local node=$1 worker=$2 script=$3
  gcloud_loc
  run gcloud compute tpus tpu-vm ssh "$node" "${LOC[@]}" --worker="$worker" --quiet \
    "${SSH_ARGS[@]}" --command="bash -c $(q "$script")"
}

# remote_scp NODE LOCAL REMOTE: copy a local file to every worker of NODE.
remote_scp() {
  local node=$1 src=$2 dest=$3
  gcloud_loc
  run gcloud compute tpus tpu-vm scp "$src" "$node:$dest" "${LOC[@]}" --worker=all --quiet \
    "${SSH_ARGS[@]}"
}

# for_each_node FUNC ARGS...: FUNC NODE ARGS... for every node. Several nodes run
# concurrently (output prefixed with the node) unless --no-parallel or --dry-run.
for_each_node() {
  local fn=$1 node i status=0
  shift
  nodes
  if ((${#NODES[@]} == 1 || TPU_DRY_RUN || !TPU_PARALLEL)); then
    for node in "${NODES[@]}"; do "$fn" "$node" "$@"; done
    return 0
  fi
  local pids=()
  for node in "${NODES[@]}"; do
    ( "$fn" "$node" "$@" 2>&1 | prefix_lines "[$node] " ) &
    pids+=("$!")
  done
  for i in "${!pids[@]}"; do
    if ! wait "${pids[i]}"; then
      echo "error: node ${NODES[i]} failed" >&2
      status=1
    fi
  done
  return "$status"
}

prefix_lines() {
  local line
  while IFS= read -r line || [[ -n $line ]]; do printf '%s%s\n' "$1" "$line"; done
}

# default_runtime ACCELERATOR: the TPU software version Google recommends for JAX.
default_runtime() {
  case $1 in
    v6e-*) echo 'v2-alpha-tpuv6e' ;;
    v5p-*) echo 'v2-alpha-tpuv5' ;;
    v5litepod-* | v5e-*) echo 'v2-alpha-tpuv5-lite' ;;
    *) echo 'tpu-ubuntu2204-base' ;;
  esac
}
