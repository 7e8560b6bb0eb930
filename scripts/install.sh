#!/usr/bin/env bash
# Installs everything EvoForge needs on a fresh Debian machine, idempotently:
# system packages (bubblewrap), a virtualenv in .venv with the pinned CPU torch, the package with its
# extras, and llama.cpp's server compiled for this CPU. Model weights are assembled on first use (or by
# `evoforge setup-model`). Safe to run again: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${EVOFORGE_VENV:-.venv}
PY=${PYTHON:-python3}

log() { printf '\033[1m[install]\033[0m %s\n' "$*"; }

need_apt=()
command -v bwrap >/dev/null 2>&1 || need_apt+=(bubblewrap)
# headless Chromium renders run reports in the tests (tests/test_report.py) and, driven by playwright (the dev
# extra) through its executable path, the dashboard (tests/test_dashboard.py): playwright downloads no browser
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
# the docker sandbox backend and its tests (the tests start a private dockerd: scripts/start-dockerd.sh)
command -v dockerd >/dev/null 2>&1 || need_apt+=(docker.io)
if [ "${#need_apt[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    log "apt-get install ${need_apt[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    log "not root: install ${need_apt[*]} yourself (without bubblewrap evaluations fall back to plain subprocesses; chromium is only for the report tests)"
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
# this machine's pip.conf may name local index folders that do not exist; pip warns once per package
pip_install() { "${PIP[@]}" install "$@" 2> >(grep -vE "is ignored: it is (neither a file nor a directory|either a non-existing path)" >&2); }
stamp="$VENV/.evoforge-installed"
want="$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  pip_install --upgrade pip >/dev/null
  # The CPU build first: any unpinned torch requirement would otherwise pull a multi-GB CUDA build.
  log "torch 2.13.0 (CPU)"
  pip_install torch==2.13.0
  log "evoforge and its dependencies"
  pip_install -e ".[studio,gpu,cluster,dev]"
  echo "$want" > "$stamp"
else
  log "python environment up to date ($VENV)"
fi

# llama.cpp's server compiled for the instruction sets this CPU reports. A wider build processes prompts ~1.5x
# faster (AVX-512 with VNNI/BF16 against AVX2, measured), so each ISA extension is switched on when
# /proc/cpuinfo lists it. Never -march=native and never AMX: AMX is advertised on some of these hosts but dies
# with SIGILL at the first decode. The flags are recorded beside the venv; the model server refuses to start on
# a CPU that lacks one of them (evoforge/llm/cpu_build.py), and a change of CPU rebuilds here.
bash scripts/build-llama-server.sh
log "done: $VENV/bin/evoforge"
