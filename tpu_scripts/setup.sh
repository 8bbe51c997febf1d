#!/usr/bin/env bash
# Set up every worker of every slice: a Python >= 3.11 virtual environment and
# `pip install -e '.[tpu]'` of the shipped code. Idempotent: safe to re-run at any time.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

USAGE="usage: tpu_scripts/setup.sh --name NAME --zone ZONE [--python python3] [--extras tpu]

On all workers (gcloud compute tpus tpu-vm ssh NODE --worker=all, every slice's node): uses
--python when it is >= 3.11, else installs python3.11 with apt; creates the virtual environment
(--venv, default ~/vidlm-venv) unless a working one is there; pip install -e '.[EXTRAS]' in the
code directory (run ship.sh first); prints the jax version. Re-running only re-checks.

Script flags:
  --python EXE             interpreter for the virtual environment [TPU_PYTHON, default python3]
  --extras LIST            extras to install [TPU_EXTRAS, default tpu]"

TPU_PYTHON=${TPU_PYTHON:-python3}
TPU_EXTRAS=${TPU_EXTRAS:-tpu}

script_flag() {
  case $FLAG in
    --python) value TPU_PYTHON ;;
    --extras) value TPU_EXTRAS ;;
    *) return 1 ;;
  esac
}

parse_flags "$@"
require TPU_NAME TPU_ZONE

setup_script() {
  cat <<EOF
set -euo pipefail
code=$(rpath "$TPU_REMOTE_DIR")
venv=$(rpath "$TPU_VENV")
py=$(q "$TPU_PYTHON")
apt_install() {
  sudo apt-get -qq -o DPkg::Lock::Timeout=300 update
  sudo DEBIAN_FRONTEND=noninteractive apt-get -qq -o DPkg::Lock::Timeout=300 install -y "\$@"
}
if [ ! -f "\$code/setup.py" ]; then
  echo "\$(hostname): no code in \$code: run tpu_scripts/ship.sh first" >&2
  exit 1
fi
if ! "\$venv/bin/python" -m pip --version >/dev/null 2>&1; then
  if ! "\$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "\$(hostname): \$py is missing or older than 3.11; installing python3.11"
    apt_install python3.11 python3.11-venv
    py=python3.11
  fi
  rm -rf "\$venv"
  if ! "\$py" -m venv "\$venv"; then
    rm -rf "\$venv"
    apt_install "\$(basename "\$py")-venv"
    "\$py" -m venv "\$venv"
  fi
fi
cd "\$code"
"\$venv/bin/python" -m pip install --quiet --upgrade pip
"\$venv/bin/python" -m pip install --quiet -e $(q ".[$TPU_EXTRAS]")
echo "\$(hostname): ready, \$("\$venv/bin/python" -c 'import jax; print("jax", jax.__version__)')"
EOF
}

setup_node() {
  remote_ssh "$1" all "$(setup_script)"
}

for_each_node setup_node
