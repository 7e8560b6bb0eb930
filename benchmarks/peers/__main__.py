"""`python -m benchmarks.peers`: create the peer venv and install the pinned peers into it."""

from . import ensure_peer_venv

if __name__ == "__main__":
    print(ensure_peer_venv())
