"""The llama.cpp build flags follow the CPU's own flags, never include AMX, and a mismatch is refused."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

from evoforge.llm.cpu_build import CPUMismatchError, build_extensions, check_build, cmake_args

AVX2_HOST = "fma avx f16c bmi1 avx2 bmi2"
# a Sapphire Rapids host: AVX-512 with VNNI/BF16/VBMI, AVX-VNNI, and AMX (advertised, unusable here)
AVX512_HOST = (AVX2_HOST + " avx512f avx512dq avx512cd avx512bw avx512vl avx512vbmi avx512_vnni avx512_bf16"
               " avx_vnni amx_bf16 amx_tile amx_int8")


def _cpuinfo(tmp_path: Path, flags: str) -> Path:
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: test cpu\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: x\n")
    return path


def test_an_avx2_host_gets_an_avx2_build() -> None:
    assert build_extensions(frozenset(AVX2_HOST.split())) == ["avx", "avx2", "fma", "f16c", "bmi2"]


def test_an_avx512_host_gets_every_extension_but_never_amx() -> None:
    extensions = build_extensions(frozenset(AVX512_HOST.split()))
    assert {"avx512", "avx512_vbmi", "avx512_vnni", "avx512_bf16", "avx_vnni"} <= set(extensions)
    args = cmake_args(extensions)
    assert "-DGGML_AVX512=ON" in args and "-DGGML_AVX512_VNNI=ON" in args
    for off in ("GGML_NATIVE", "GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16"):
        assert f"-D{off}=OFF" in args


def test_avx512_needs_its_whole_foundation_set() -> None:
    partial = frozenset((AVX2_HOST + " avx512f avx512cd").split())  # no BW/DQ/VL: not a usable AVX-512
    assert "avx512" not in build_extensions(partial)
    assert "-DGGML_AVX512=OFF" in cmake_args(build_extensions(partial))


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the check applies to x86-64 builds")
def test_a_build_for_a_wider_cpu_is_refused_with_the_fix(tmp_path: Path) -> None:
    stamp = tmp_path / "stamp"
    stamp.write_text(" ".join(build_extensions(frozenset(AVX512_HOST.split()))))
    with pytest.raises(CPUMismatchError, match="avx512.*scripts/install.sh"):
        check_build(stamp, _cpuinfo(tmp_path, AVX2_HOST))
    check_build(stamp, _cpuinfo(tmp_path, AVX512_HOST))  # the CPU it was built for: fine
    check_build(tmp_path / "no-stamp", _cpuinfo(tmp_path, AVX2_HOST))  # installed some other way: not ours to judge


def test_the_installed_build_matches_this_cpu() -> None:
    """The install script recorded flags for this venv, and this machine's CPU has every one of them."""
    stamp = Path(sys.prefix) / ".llama-cpu-flags"
    assert stamp.is_file(), f"{stamp} is missing: scripts/install.sh writes it when it builds llama-cpp-python"
    check_build(stamp)
    printed = subprocess.run([sys.executable, "-m", "evoforge.llm.cpu_build", "flags"], capture_output=True,
                             text=True, check=True).stdout.split()
    assert printed == stamp.read_text().split()
