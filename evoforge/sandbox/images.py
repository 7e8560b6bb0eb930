"""Images for the docker backend: the host-runtime image built offline, and the mounts that complete it.

The host-runtime image is `FROM scratch` plus a skeleton root (empty mount points, /tmp, and this machine's
/bin, /lib, ... symlinks), built from an in-memory context, so it needs no registry. A container from it sees
this machine's system directories, a few files of /etc and the Python installation through read-only bind
mounts (`host_runtime_mounts`): the candidate runs with exactly the interpreter and packages the local
sandbox uses, which is what the tests and a single machine need.

Trade-off: the container shares the host's binaries instead of carrying its own, so it only works on an
engine that runs on this machine and it is not a reproducible artefact to ship to other machines. For real
(GPU) use, build evoforge/sandbox/Dockerfile and set `sandbox.docker.image`.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import tarfile
import threading
from pathlib import Path
from typing import Any

from evoforge.sandbox import bubblewrap
from evoforge.sandbox.identity import SandboxError

log = logging.getLogger(__name__)

HOST_RUNTIME_REPOSITORY = "evoforge/host-runtime"
HOST_ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "ssl", "ca-certificates",
                  "nsswitch.conf", "localtime", "mime.types")
"""What of /etc a Python program needs (the dynamic linker's cache, certificates); passwd, shadow, the
machine's configuration and credentials stay out."""
_SKELETON_DIRS = ("etc", "proc", "sys", "dev", "root", "home", "work", "opt", "usr", "var")
_BUILD_LOCK = threading.Lock()


def _system_tops() -> list[tuple[str, str | None]]:
    """(name, symlink target or None) of this machine's top-level system directories."""
    tops: list[tuple[str, str | None]] = []
    for top in bubblewrap.SYSTEM_DIRS:
        if top == "/etc":
            continue
        if os.path.islink(top):
            tops.append((top.lstrip("/"), os.readlink(top)))
        elif os.path.isdir(top):
            tops.append((top.lstrip("/"), None))
    return tops


def skeleton_rootfs() -> bytes:
    """The image's whole root filesystem as a tar archive (no file content, only directories and links)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        def add(name: str, kind: bytes, mode: int = 0o755, target: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.linkname, info.mtime = kind, mode, target, 0
            tar.addfile(info)

        add("tmp", tarfile.DIRTYPE, 0o1777)
        for name in _SKELETON_DIRS:
            add(name, tarfile.DIRTYPE)
        for name, target in _system_tops():
            if target is None:
                add(name, tarfile.DIRTYPE)
            else:
                add(name, tarfile.SYMTYPE, 0o777, target)
    return buffer.getvalue()


def _build_context(rootfs: bytes) -> io.BytesIO:
    dockerfile = b"FROM scratch\nADD rootfs.tar /\nLABEL org.evoforge.image=host-runtime\n"
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, data in (("rootfs.tar", rootfs), ("Dockerfile", dockerfile)):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 0
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    return context


def ensure_host_runtime_image(client: Any) -> str:
    """The tag of the host-runtime image on `client`'s engine, built there first if it is missing."""
    import docker

    rootfs = skeleton_rootfs()
    tag = f"{HOST_RUNTIME_REPOSITORY}:{hashlib.sha256(rootfs).hexdigest()[:12]}"
    with _BUILD_LOCK:
        try:
            client.images.get(tag)
            return tag
        except docker.errors.ImageNotFound:
            pass  # first use on this engine: build it below
        log.info("building the docker image %s offline", tag)
        try:
            client.images.build(fileobj=_build_context(rootfs), custom_context=True, tag=tag, rm=True,
                                forcerm=True, pull=False)
        except docker.errors.DockerException as exc:
            raise SandboxError(f"building the host-runtime image {tag} failed: {exc}") from exc
    return tag


def host_runtime_mounts(extra_readonly: list[Path]) -> list[tuple[str, str]]:
    """(source, target) pairs to bind read-only into a host-runtime container: the system directories,
    the allowed files of /etc, the Python installation and `extra_readonly` (nested paths are dropped)."""
    paths = [Path(f"/{name}") for name, target in _system_tops() if target is None]
    paths += [Path("/etc", name) for name in HOST_ETC_FILES if os.path.lexists(f"/etc/{name}")]
    paths += [*bubblewrap.python_roots(), *extra_readonly]
    return [(str(path), str(path)) for path in minimal_cover(paths)]


def minimal_cover(paths: list[Path]) -> list[Path]:
    """Existing absolute `paths` without those already inside another one, parents first. Symlinks are kept
    as given: the engine binds what they point at, at the path the program expects."""
    absolute = sorted({Path(os.path.abspath(p)) for p in paths if p.exists()}, key=lambda p: len(p.parts))
    kept: list[Path] = []
    for path in absolute:
        if not any(path.is_relative_to(parent) for parent in kept):
            kept.append(path)
    return kept
