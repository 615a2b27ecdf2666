#!/bin/sh
# The whole test suite, on a fresh Debian/Ubuntu machine (as root, or with sudo):
# installs what the tests need (Docker engine, git daemon, sshd, debootstrap,
# age, restic, promtool, an image registry for pull tests),
# starts the Docker engine when none answers, builds the local base images
# (no registry needed), then runs lint, types and every test, integration included.
#
# Usage: sh tests/run.sh [pytest arguments]
set -eu
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${RECONCILER_TEST_VENV:-$ROOT/.venv}
log() { printf '[tests/run.sh] %s\n' "$*" >&2; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=""
command -v dockerd >/dev/null 2>&1 || missing="$missing docker.io"
command -v git >/dev/null 2>&1 || missing="$missing git"
[ -x /usr/sbin/sshd ] || missing="$missing openssh-server"
command -v debootstrap >/dev/null 2>&1 || missing="$missing debootstrap"
command -v busybox >/dev/null 2>&1 || missing="$missing busybox-static"
command -v docker-compose >/dev/null 2>&1 || missing="$missing docker-compose"
command -v shellcheck >/dev/null 2>&1 || missing="$missing shellcheck"
command -v zstd >/dev/null 2>&1 || missing="$missing zstd"
command -v age >/dev/null 2>&1 || missing="$missing age"
command -v promtool >/dev/null 2>&1 || missing="$missing prometheus"
command -v restic >/dev/null 2>&1 || missing="$missing restic"
# A registry on 127.0.0.1 that the pull tests push to (tests/fixtures/registry.py).
command -v docker-registry >/dev/null 2>&1 || missing="$missing docker-registry"
# The second Swarm node of tests/swarm/ (a dockerd in a network namespace).
command -v ip >/dev/null 2>&1 || missing="$missing iproute2"
command -v nsenter >/dev/null 2>&1 || missing="$missing util-linux"
python3 -c 'import venv, ensurepip' 2>/dev/null || missing="$missing python3-venv"
if [ -n "$missing" ]; then
  log "installing:$missing"
  as_root apt-get update -q >/dev/null
  # No service of a package is started here (prometheus's would take :9090,
  # docker-registry's :5000):
  # a policy-rc.d that refuses every start, only while apt runs.
  policy=/usr/sbin/policy-rc.d
  own_policy=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
    as_root chmod 755 "$policy"
    own_policy=1
  fi
  status=0
  # $missing is a list of package names: split on purpose.
  # shellcheck disable=SC2086
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing >/dev/null || status=$?
  if [ -n "$own_policy" ]; then as_root rm -f "$policy"; fi
  [ "$status" = 0 ] || exit "$status"
fi

if ! docker info >/dev/null 2>&1; then
  log "starting the Docker engine"
  as_root sh -c 'nohup dockerd >/var/log/dockerd.log 2>&1 &'
  i=0
  until docker info >/dev/null 2>&1; do
    i=$((i + 1))
    if [ "$i" -gt 60 ]; then log "dockerd did not answer in 60s; see /var/log/dockerd.log"; exit 1; fi
    sleep 1
  done
fi

sh images/local/build-base-images.sh

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  python3 -m venv "$VENV"
fi
log "installing the package and its test tools into $VENV"
# Quiet unless it fails: setuptools' notices about editable installs are noise.
if ! "$VENV/bin/pip" install -q -U pip >"$VENV/pip.log" 2>&1 ||
  ! "$VENV/bin/pip" install -q -e '.[test]' >>"$VENV/pip.log" 2>&1; then
  cat "$VENV/pip.log" >&2
  exit 1
fi
PATH="$VENV/bin:$PATH"
export PATH

log "ruff"
ruff check reconciler tests bench
ruff format --check reconciler tests bench
log "mypy"
mypy
log "shellcheck"
shellcheck -s sh install.sh tests/run.sh images/local/build-base-images.sh images/local/phpmyadmin/entrypoint.sh .ci/run
# Most of the suite waits on the engine, restic's key derivation and
# containers' health checks rather than computing, so it runs on several
# workers; each test file stays on one worker (module-scoped stacks, install
# order). The tests that restart dockerd run afterwards, alone.
WORKERS=${RECONCILER_TEST_WORKERS:-6}
# One seed for both phases' fault cases, printed in each table (replay: set it).
RECONCILER_FAULT_SEED=${RECONCILER_FAULT_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
export RECONCILER_FAULT_SEED
# A run killed in its swarm phase leaves the engine a Swarm manager, which
# would turn every deploy below into a Swarm deploy.
if [ "$(docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null)" != inactive ]; then
  docker swarm leave --force >/dev/null 2>&1 || true
fi
log "pytest: the shared-engine tests on $WORKERS workers"
shared=0
python -m pytest -n "$WORKERS" --dist loadfile --engine-phase=shared "$@" || shared=$?
log "pytest: the tests that restart the engine, alone"
exclusive=0
python -m pytest --engine-phase=exclusive "$@" || exclusive=$?
# Last: the engine as a Swarm manager; the tests' fixture leaves the Swarm again.
log "pytest: swarm mode, alone"
swarm=0
python -m pytest --engine-phase=swarm "$@" || swarm=$?
docker swarm leave --force >/dev/null 2>&1 || true
# 5 is "no test collected": a phase the given arguments left empty is not a
# failure, unless all were.
if [ "$shared" = 5 ] && [ "$exclusive" = 5 ] && [ "$swarm" = 5 ]; then exit 5; fi
[ "$shared" = 5 ] && shared=0
[ "$exclusive" = 5 ] && exclusive=0
[ "$swarm" = 5 ] && swarm=0
[ "$shared" = 0 ] || exit "$shared"
[ "$exclusive" = 0 ] || exit "$exclusive"
exit "$swarm"
