#!/usr/bin/env bash
# Ship the code to every worker of every slice: a tarball of a git revision (default), a
# tarball you made, or a `git clone`/`fetch` + checkout on the workers.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

USAGE="usage: tpu_scripts/ship.sh --name NAME --zone ZONE [--rev REV] [--tarball FILE | --git-url URL]

Puts the code into the remote directory (--remote-dir, default ~/vidlm) on all workers.
  default        git archive REV of the local checkout -> TMPDIR/NAME-code.tar.gz, copied with
                 gcloud compute tpus tpu-vm scp --worker=all, unpacked into a fresh directory
                 that then replaces the old one (files deleted locally disappear remotely too).
                 Only committed files travel: uncommitted changes are not shipped.
  --tarball FILE ship this .tar.gz instead (its top level becomes the code directory).
  --git-url URL  the workers clone URL (first time) or fetch it, then check out REV
                 (REV must be pushed; the workers need read access to URL).
The shipped revision is written to REVISION in the code directory. Run setup.sh after the
first ship and whenever setup.py changes; stop.sh a running job before shipping over it.

Script flags:
  --rev REV                git revision to ship [TPU_REV, default: the local HEAD commit]
  --tarball FILE           ship an existing .tar.gz [TPU_TARBALL]
  --git-url URL            clone/fetch on the workers instead of copying [TPU_GIT_URL]
  --repo DIR               local checkout to archive [TPU_REPO, default: this repository]"

TPU_REV=${TPU_REV:-}
TPU_TARBALL=${TPU_TARBALL:-}
TPU_GIT_URL=${TPU_GIT_URL:-}
TPU_REPO=${TPU_REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
REMOTE_TARBALL=vidlm-code.tar.gz

script_flag() {
  case $FLAG in
    --rev) value TPU_REV ;;
    --tarball) value TPU_TARBALL ;;
    --git-url) value TPU_GIT_URL ;;
    --repo) value TPU_REPO ;;
    *) return 1 ;;
  esac
}

parse_flags "$@"
require TPU_NAME TPU_ZONE
if [[ -n $TPU_TARBALL && -n $TPU_GIT_URL ]]; then die "--tarball and --git-url exclude each other"; fi
if [[ -n $TPU_TARBALL && ! -f $TPU_TARBALL ]]; then die "--tarball $TPU_TARBALL: no such file"; fi

if [[ -z $TPU_TARBALL ]]; then
  rev=${TPU_REV:-HEAD}
  commit=$(git -C "$TPU_REPO" rev-parse --verify --quiet "$rev^{commit}") ||
    die "--rev $rev is not a commit in $TPU_REPO"
  if [[ -z $TPU_GIT_URL && -n $(git -C "$TPU_REPO" status --porcelain --untracked-files=no) ]]; then
    warn "uncommitted changes in $TPU_REPO are not shipped (shipping $commit)"
  fi
  label=$commit
else
  label="tarball $(basename "$TPU_TARBALL")"
fi

code=$(rpath "$TPU_REMOTE_DIR")

unpack_script() {
  cat <<EOF
set -euo pipefail
code=$code
rm -rf "\$code.new" "\$code.old"
mkdir -p "\$code.new"
tar -xzf "\$HOME"/$REMOTE_TARBALL -C "\$code.new"
if [ -d "\$code" ]; then mv "\$code" "\$code.old"; fi
mv "\$code.new" "\$code"
rm -rf "\$code.old" "\$HOME"/$REMOTE_TARBALL
echo $(q "$label") > "\$code"/REVISION
echo "\$(hostname): \$code <- $(q "$label")"
EOF
}

git_script() {
  cat <<EOF
set -euo pipefail
code=$code
if [ -d "\$code/.git" ]; then
  git -C "\$code" remote set-url origin $(q "$TPU_GIT_URL")
  git -C "\$code" fetch --quiet --tags origin
else
  rm -rf "\$code"
  git clone --quiet $(q "$TPU_GIT_URL") "\$code"
fi
git -C "\$code" cat-file -e $(q "$commit^{commit}") 2>/dev/null ||
  git -C "\$code" fetch --quiet origin $(q "$commit")
git -C "\$code" checkout --quiet --force --detach $(q "$commit")
echo $(q "$commit") > "\$code"/REVISION
echo "\$(hostname): \$code <- $(q "$commit")"
EOF
}

ship_tarball() {
  remote_scp "$1" "$tarball" "$REMOTE_TARBALL"
  remote_ssh "$1" all "$(unpack_script)"
}

ship_git() {
  remote_ssh "$1" all "$(git_script)"
}

if [[ -n $TPU_GIT_URL ]]; then
  for_each_node ship_git
  exit 0
fi
if [[ -n $TPU_TARBALL ]]; then
  tarball=$TPU_TARBALL
else
  tarball=${TMPDIR:-/tmp}/$TPU_NAME-code.tar.gz
  run git -C "$TPU_REPO" archive --format=tar.gz --output="$tarball" "$commit"
fi
for_each_node ship_tarball
