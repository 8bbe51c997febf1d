#!/usr/bin/env bash
# Launch training on every worker of every slice at once, detached, one log file per worker.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

USAGE="usage: tpu_scripts/launch.sh --name NAME --zone ZONE --config FILE[:ARGS] --workdir DIR
                            [--module mreserve.train] [--run RUN] [--env KEY=VALUE ...]
                            [--config.a.b=VALUE ...] [-- EXTRA_TRAIN_FLAGS...]

On every worker (gcloud compute tpus tpu-vm ssh NODE --worker=all, each slice's node) runs
  cd CODE && setsid nohup VENV/bin/python -m MODULE --config FILE --workdir DIR --config.*...
detached from the ssh session, stdout+stderr to LOG_DIR/RUN.\$(hostname).log (one file per
worker; LOG_DIR/latest.log points at the newest), its pid in LOG_DIR/job.pid. A worker where
that pid is still alive refuses to start a second job (stop.sh first).

--config.* overrides are passed to the trainer as single arguments: values may hold spaces
and quotes (e.g. \"--config.run_name=my run\"). Multi-slice (--slices N>1): adds
--config.mesh.dcn_data=N unless you set it; the MEGASCALE_* variables that join the slices
come from the queued resource's TPU metadata, which jax and libtpu read themselves, so
nothing else is set (override with --env MEGASCALE_...=... only if you know why).

The work directory should be gs://BUCKET/PATH: every host of a slice must see the same
checkpoints. A local path (relative: under the worker's \$HOME) only fits one-host slices.

Script flags:
  --config FILE[:ARGS]     config file, relative to the code directory [TPU_CONFIG]
  --workdir DIR            gs:// path or worker-local path [TPU_WORKDIR]
  --module MODULE          python -m entry point [TPU_MODULE, default mreserve.train]
                           (hero.train, trainer.examples.lm, ...)
  --run RUN                log file name prefix [TPU_RUN, default: UTC time]
  --env KEY=VALUE          environment variable for the job, repeatable [TPU_ENV, space separated]
  --config.KEY=VALUE       config override, repeatable (also --config.KEY VALUE)"

TPU_CONFIG=${TPU_CONFIG:-}
TPU_WORKDIR=${TPU_WORKDIR:-}
TPU_MODULE=${TPU_MODULE:-mreserve.train}
TPU_RUN=${TPU_RUN:-$(date -u +%Y%m%d-%H%M%S)}
JOB_ENV=()
read -r -a JOB_ENV <<<"${TPU_ENV:-}"
OVERRIDES=()

script_flag() {
  local v
  case $FLAG in
    --config) value TPU_CONFIG ;;
    --workdir) value TPU_WORKDIR ;;
    --module) value TPU_MODULE ;;
    --run) value TPU_RUN ;;
    --env) value v; JOB_ENV+=("$v") ;;
    --config.*) value v; OVERRIDES+=("$FLAG=$v") ;;
    *) return 1 ;;
  esac
}

parse_flags "$@"
require TPU_NAME TPU_ZONE TPU_CONFIG TPU_WORKDIR
[[ $TPU_MODULE =~ ^[A-Za-z_][A-Za-z0-9_.]*$ ]] || die "--module '$TPU_MODULE' is not a module name"
[[ $TPU_RUN =~ ^[A-Za-z0-9_.-]+$ ]] || die "--run '$TPU_RUN': use letters, digits, _ . -"
for kv in "${JOB_ENV[@]}"; do
  [[ $kv =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env '$kv' is not KEY=VALUE"
done
if [[ $TPU_WORKDIR != gs://* ]]; then
  warn "--workdir $TPU_WORKDIR is local to each worker: fine for a one-host slice; multi-host" \
    "slices need a gs:// path that every host sees"
fi
if ((TPU_SLICES > 1)) && [[ " ${OVERRIDES[*]} " != *" --config.mesh.dcn_data="* ]]; then
  OVERRIDES+=("--config.mesh.dcn_data=$TPU_SLICES")
fi

# A relative local work directory lives under the worker's $HOME (ship.sh replaces the code
# directory, so it must not be in there).
if [[ $TPU_WORKDIR == *://* || $TPU_WORKDIR == /* ]]; then
  workdir=$(q "$TPU_WORKDIR")
else
  workdir=$(rpath "$TPU_WORKDIR")
fi

launch_script() {
  local env_prefix=''
  if ((${#JOB_ENV[@]})); then env_prefix="env $(quote_all "${JOB_ENV[@]}") "; fi
  cat <<EOF
set -euo pipefail
code=$(rpath "$TPU_REMOTE_DIR")
logs=$(rpath "$TPU_LOG_DIR")
mkdir -p "\$logs"
if [ -f "\$logs/job.pid" ] && kill -0 "\$(cat "\$logs/job.pid")" 2>/dev/null; then
  echo "\$(hostname): job \$(cat "\$logs/job.pid") is still running; run tpu_scripts/stop.sh first" >&2
  exit 1
fi
log="\$logs"/$(q "$TPU_RUN").\$(hostname).log
ln -sfn "\$log" "\$logs/latest.log"
cd "\$code"
setsid nohup ${env_prefix}$(rpath "$TPU_VENV")/bin/python -m $TPU_MODULE --config $(q "$TPU_CONFIG") --workdir $workdir $(quote_all "${OVERRIDES[@]}" "${POSITIONAL[@]}") >"\$log" 2>&1 </dev/null &
echo \$! >"\$logs/job.pid"
echo "\$(hostname): started pid \$!, log \$log"
EOF
}

launch_node() {
  remote_ssh "$1" all "$(launch_script)"
}

for_each_node launch_node
