#!/usr/bin/env bash
# The one command that sets up and runs the whole test suite on a fresh machine:
#   bash tests/run.sh [pytest args...]
# Creates .venv, installs the project with its test extras, makes sure ffmpeg and tmux, a Docker
# daemon, the offline sandbox test image and the remote-engine test image exist (installing ffmpeg, tmux, docker.io and debootstrap
# and starting dockerd when run as root on a Debian-like machine), then runs pytest. Docker tests
# skip loudly when Docker can't be had, unless KIMI_CODE_REQUIRE_DOCKER=1 (CI), which makes that a
# failure.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export KIMI_CODE_TEST_IMAGE="${KIMI_CODE_TEST_IMAGE:-kimi-code-sandbox:offline}"
PY="${PYTHON:-python3}"

log() { printf '[tests/run.sh] %s\n' "$*" >&2; }

# 1. Python environment.
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
log "installing the project and its test dependencies"
.venv/bin/python -m pip install -q -e '.[test]' 2>&1 | grep -v -E 'is ignored|^$' >&2 || true
.venv/bin/python -c 'import kimi_code.agent.cli' || { log "install failed"; exit 1; }

# 2. ffmpeg (the media tests make real MP4 and WebM files with it; view_video's sizes come from
# ffprobe) and tmux (the terminal tests of the interactive session).
missing=()
{ command -v ffmpeg && command -v ffprobe; } >/dev/null 2>&1 || missing+=(ffmpeg)
command -v tmux >/dev/null 2>&1 || missing+=(tmux)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing ${missing[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    log "WARNING: ${missing[*]} missing: the media tests fail and the terminal tests skip"
  fi
fi

# 3. Docker daemon.
docker_ok() { docker info >/dev/null 2>&1; }
if ! docker_ok; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    if ! command -v dockerd >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1; then
      log "installing docker.io and debootstrap"
      apt-get update -qq >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null
    fi
    if ! docker_ok; then
      log "starting dockerd"
      nohup dockerd >/var/log/kimi-code-dockerd.log 2>&1 &
      for _ in $(seq 1 60); do docker_ok && break; sleep 1; done
    fi
  fi
fi
if docker_ok; then
  # 4. The sandbox test image, built from Debian packages without any registry.
  if ! docker image inspect "$KIMI_CODE_TEST_IMAGE" >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && ! command -v debootstrap >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
      apt-get update -qq >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    fi
    log "building sandbox image $KIMI_CODE_TEST_IMAGE (debootstrap, about a minute)"
    bash sandbox/build-offline-image.sh "$KIMI_CODE_TEST_IMAGE" || log "WARNING: image build failed"
  fi
  # 4b. The second engine's image (tests/remote_engine.py): the same Debian plus its docker.io,
  # for a dockerd in a container that cannot see this machine's files.
  DIND_IMAGE="${KIMI_CODE_DIND_IMAGE:-kimi-code-dind:offline}"
  if ! docker image inspect "$DIND_IMAGE" >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    log "building the remote-engine test image $DIND_IMAGE (debootstrap with docker.io)"
    KIMI_CODE_EXTRA_PACKAGES=docker.io,iptables bash sandbox/build-offline-image.sh "$DIND_IMAGE" \
      || log "WARNING: remote-engine image build failed"
  fi
else
  log "WARNING: no Docker daemon: Docker tests will skip (or fail with KIMI_CODE_REQUIRE_DOCKER=1)"
fi

# 5. The tests. pytest exits 5 when no test ran: that is a failure here too.
log "running pytest"
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then log "pytest collected no tests"; exit 1; fi
exit "$rc"
