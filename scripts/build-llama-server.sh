#!/usr/bin/env bash
# Compiles llama.cpp's own OpenAI-compatible server (`llama-server`) into $VENV/bin, for the instruction sets
# this CPU reports (evoforge/llm/cpu_build.py: every extension /proc/cpuinfo lists, never AMX, never
# -march=native). The sources are the llama.cpp tree vendored in the pinned llama-cpp-python sdist from PyPI,
# checked against its sha256, so the build needs no network beyond PyPI. Called by scripts/install.sh; skips
# the build when the binary exists and was compiled for the same flags. ~15 min on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${EVOFORGE_VENV:-.venv}
SDIST_VERSION=0.3.36
SDIST_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
SRC_CACHE=${EVOFORGE_SRC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/evoforge/src}

log() { printf '\033[1m[install]\033[0m %s\n' "$*"; }

flags="$("$VENV/bin/python" -m evoforge.llm.cpu_build flags)"
stamp="$VENV/.llama-cpu-flags"
binary="$VENV/bin/llama-server"
if [ -x "$binary" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$flags" ]; then
  log "llama-server up to date (${flags})"
  exit 0
fi

sdist="$SRC_CACHE/llama_cpp_python-$SDIST_VERSION.tar.gz"
if [ ! -f "$sdist" ] || [ "$(sha256sum "$sdist" | cut -d' ' -f1)" != "$SDIST_SHA256" ]; then
  log "llama.cpp sources (llama-cpp-python $SDIST_VERSION sdist, 77 MB)"
  mkdir -p "$SRC_CACHE"
  rm -f "$sdist"
  "$VENV/bin/python" -m pip --disable-pip-version-check -q download --no-deps --no-binary :all: \
    "llama-cpp-python==$SDIST_VERSION" -d "$SRC_CACHE" \
    2> >(grep -vE "is ignored: it is (neither a file nor a directory|either a non-existing path)" >&2)
  got="$(sha256sum "$sdist" | cut -d' ' -f1)"
  if [ "$got" != "$SDIST_SHA256" ]; then
    rm -f "$sdist"
    echo "llama-cpp-python $SDIST_VERSION sdist: sha256 $got, expected $SDIST_SHA256; removed" >&2
    exit 1
  fi
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/evoforge-llama-build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
log "llama-server for this CPU (${flags:-baseline x86-64}); compiles from source: ~15 min on 2 cores"
tar -xzf "$sdist" -C "$work" "llama_cpp_python-$SDIST_VERSION/vendor/llama.cpp"
source_dir="$work/llama_cpp_python-$SDIST_VERSION/vendor/llama.cpp"
generator=()
command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
# the system's cmake where there is one (Debian's), else PyPI's in the venv
CMAKE=cmake
if ! command -v cmake >/dev/null 2>&1; then
  "$VENV/bin/python" -m pip --disable-pip-version-check -q install "cmake>=3.20,<5" \
    2> >(grep -vE "is ignored: it is (neither a file nor a directory|either a non-existing path)" >&2)
  CMAKE="$VENV/bin/cmake"
fi
# static libraries: one self-contained binary in the venv, no libllama.so to find at run time;
# no OpenSSL: the server listens on loopback only and never fetches a model
# shellcheck disable=SC2046  # the flags are separate words by design
"$CMAKE" -S "$source_dir" -B "$work/build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
  $("$VENV/bin/python" -m evoforge.llm.cpu_build cmake-args) \
  -DBUILD_SHARED_LIBS=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF -DGGML_CCACHE=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON \
  >"$work/cmake.log" 2>&1 || { cat "$work/cmake.log" >&2; exit 1; }
"$CMAKE" --build "$work/build" --target llama-server -j "$(nproc)" >"$work/build.log" 2>&1 \
  || { tail -40 "$work/build.log" >&2; exit 1; }
install -m 0755 "$work/build/bin/llama-server" "$binary"
echo "$flags" >"$stamp"
log "llama-server: $binary"
