#!/usr/bin/env bash
# Installs everything EvoForge needs on a fresh Debian machine, idempotently:
# system packages (bubblewrap), a virtualenv in .venv with the pinned CPU torch, the package with its
# extras, and llama-cpp-python compiled portably. Model weights are assembled on first use (or by
# `evoforge setup-model`). Safe to run again: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${EVOFORGE_VENV:-.venv}
PY=${PYTHON:-python3}

log() { printf '\033[1m[install]\033[0m %s\n' "$*"; }

need_apt=()
command -v bwrap >/dev/null 2>&1 || need_apt+=(bubblewrap)
# headless Chromium renders run reports in the tests (tests/test_report.py)
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

# llama.cpp (llama-cpp-python) compiled for the instruction sets this CPU reports. A wider build processes
# prompts ~1.5x faster (AVX-512 with VNNI/BF16 against AVX2, measured), so each ISA extension is switched on
# when /proc/cpuinfo lists it. Never -march=native and never AMX: AMX is advertised on some of these hosts but
# dies with SIGILL at the first decode. The flags are recorded beside the venv; the model server refuses to
# start on a CPU that lacks one of them (evoforge/llm/cpu_build.py), and a change of CPU rebuilds here.
# --no-cache-dir: pip's wheel cache is keyed by the sdist, not the flags, and would carry a wide build over.
llama_flags="$("$VENV/bin/python" -m evoforge.llm.cpu_build flags)"
llama_stamp="$VENV/.llama-cpu-flags"
if [ ! -f "$llama_stamp" ] || [ "$(cat "$llama_stamp")" != "$llama_flags" ] \
    || ! "$VENV/bin/python" -c "import llama_cpp.server" 2>/dev/null; then
  log "llama-cpp-python for this CPU (${llama_flags:-baseline x86-64}); compiles from source: ~5 min"
  # LLAVA_BUILD=OFF: the multimodal library (mtmd, loaded only by image chat formats) is not needed and is slow to compile
  CMAKE_ARGS="${CMAKE_ARGS:-$("$VENV/bin/python" -m evoforge.llm.cpu_build cmake-args) -DLLAVA_BUILD=OFF}" \
    pip_install --no-cache-dir --force-reinstall --no-deps llama-cpp-python==0.3.36
  pip_install -e ".[local]"
  echo "$llama_flags" > "$llama_stamp"
else
  log "llama-cpp-python up to date (${llama_flags})"
fi
log "done: $VENV/bin/evoforge"
