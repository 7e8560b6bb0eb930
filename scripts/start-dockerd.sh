#!/usr/bin/env bash
# Starts a private Docker engine for EvoForge's docker sandbox (tests, CI, machines without a system dockerd),
# or stops it again. No bridge, no iptables rules: sandboxed containers run with --network none anyway.
#
#   scripts/start-dockerd.sh start DIR   # prints the engine's base URL (unix://DIR/docker.sock) once it answers
#   scripts/start-dockerd.sh stop DIR
#
# DIR holds the socket, pid file, log, data root and exec root; keep it short (containerd's socket lives below
# it, and unix socket paths are limited to 107 bytes). Starting is idempotent: an engine already answering on
# DIR's socket is reused.
set -euo pipefail
action=${1:-}
dir=${2:-}
[ -n "$action" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }
sock="$dir/docker.sock"
pidfile="$dir/dockerd.pid"
timeout_s=${EVOFORGE_DOCKERD_TIMEOUT:-60}

answers() {  # the engine's /_ping over its socket, without needing the docker CLI
  python3 - "$sock" <<'PY' 2>/dev/null
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(2)
s.connect(sys.argv[1])
s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
sys.exit(0 if b"OK" in s.recv(4096) else 1)
PY
}

case "$action" in
  start)
    command -v dockerd >/dev/null 2>&1 || {
      echo "dockerd is not installed: apt-get install -y --no-install-recommends docker.io" >&2; exit 1; }
    [ "$(id -u)" -eq 0 ] || { echo "starting dockerd needs root" >&2; exit 1; }
    mkdir -p "$dir/data" "$dir/exec"
    if [ -S "$sock" ] && answers; then echo "unix://$sock"; exit 0; fi
    rm -f "$sock"
    setsid dockerd --bridge=none --iptables=false --ip-masq=false --userland-proxy=false \
      --data-root "$dir/data" --exec-root "$dir/exec" --pidfile "$pidfile" -H "unix://$sock" \
      >"$dir/dockerd.log" 2>&1 </dev/null &
    for _ in $(seq $((timeout_s * 10))); do
      if [ -S "$sock" ] && answers; then echo "unix://$sock"; exit 0; fi
      kill -0 $! 2>/dev/null || break
      sleep 0.1
    done
    echo "dockerd did not answer on $sock within ${timeout_s}s; last lines of $dir/dockerd.log:" >&2
    tail -20 "$dir/dockerd.log" >&2 || true
    kill $! 2>/dev/null || true
    exit 1
    ;;
  stop)
    [ -f "$pidfile" ] || exit 0
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || exit 0
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 0.1; done
    echo "dockerd $pid did not stop within 15 s; killing it" >&2
    kill -9 "$pid" 2>/dev/null || true
    ;;
  *) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
