"""Which x86 instruction sets llama.cpp is compiled for: every extension this CPU reports, never AMX.

`scripts/install.sh` asks this module for the CMake flags, compiles llama-cpp-python with them and records
them in `<venv>/.llama-cpu-flags`; the model server checks the record against the CPU it runs on, so a venv
carried to an older CPU fails with one clear line instead of SIGILL at the first decode.

AVX-512 with VNNI/BF16 processes prompts ~1.5x faster than AVX2 on these hosts (measured side by side);
generation is memory-bound and barely changes. AMX is left out although some hosts advertise it: llama.cpp's
AMX path dies with SIGILL (`tilezero`) there. `-march=native` would pull it in, so the flags are explicit.

    python -m evoforge.llm.cpu_build flags        # the extensions to build for, e.g. "avx avx2 ... avx512"
    python -m evoforge.llm.cpu_build cmake-args   # the CMAKE_ARGS for llama-cpp-python
"""

from __future__ import annotations

import platform
import sys
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
STAMP_NAME = ".llama-cpu-flags"

# (name written to the stamp, CMake option, the /proc/cpuinfo flags it needs), in llama.cpp's order;
# AVX-512 VBMI/VNNI/BF16 build on top of the AVX-512 foundation set.
_EXTENSIONS: tuple[tuple[str, str, frozenset[str]], ...] = (
    ("avx", "GGML_AVX", frozenset({"avx"})),
    ("avx2", "GGML_AVX2", frozenset({"avx2"})),
    ("fma", "GGML_FMA", frozenset({"fma"})),
    ("f16c", "GGML_F16C", frozenset({"f16c"})),
    ("bmi2", "GGML_BMI2", frozenset({"bmi2"})),
    ("avx_vnni", "GGML_AVX_VNNI", frozenset({"avx_vnni"})),
    ("avx512", "GGML_AVX512", frozenset({"avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw"})),
    ("avx512_vbmi", "GGML_AVX512_VBMI", frozenset({"avx512f", "avx512vbmi"})),
    ("avx512_vnni", "GGML_AVX512_VNNI", frozenset({"avx512f", "avx512_vnni"})),
    ("avx512_bf16", "GGML_AVX512_BF16", frozenset({"avx512f", "avx512_bf16"})),
)
_ALWAYS_OFF = ("GGML_NATIVE", "GGML_AMX_TILE", "GGML_AMX_INT8", "GGML_AMX_BF16")


class CPUMismatchError(RuntimeError):
    """llama.cpp was compiled for instruction sets this CPU does not have."""


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str]:
    """The flags of the first processor in /proc/cpuinfo (empty where there is no such file)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def build_extensions(flags: frozenset[str]) -> list[str]:
    """The extensions to compile llama.cpp for, given a CPU's flags (x86 only; empty elsewhere)."""
    return [name for name, _, needs in _EXTENSIONS if needs <= flags]


def cmake_args(extensions: list[str]) -> str:
    """CMAKE_ARGS that switch exactly `extensions` on and everything else (native, AMX) off."""
    options = {option: "OFF" for option in _ALWAYS_OFF}
    for name, option, _ in _EXTENSIONS:
        options[option] = "ON" if name in extensions else "OFF"
    return " ".join(f"-D{option}={value}" for option, value in options.items())


def check_build(stamp: Path | None = None, cpuinfo: Path = CPUINFO) -> None:
    """Raise CPUMismatchError if the installed llama.cpp needs an extension this CPU lacks.

    No stamp (llama-cpp-python installed some other way) or a non-x86 machine: nothing to check.
    """
    stamp = Path(sys.prefix) / STAMP_NAME if stamp is None else stamp
    if not stamp.is_file() or platform.machine() not in ("x86_64", "AMD64"):
        return
    built_for = stamp.read_text().split()
    here = set(build_extensions(cpu_flags(cpuinfo)))
    missing = [name for name in built_for if name not in here]
    if missing:
        raise CPUMismatchError(
            f"llama.cpp in {sys.prefix} was compiled for {' '.join(missing)}, which this CPU lacks; "
            "run `bash scripts/install.sh` on this machine to rebuild it for this CPU"
        )


def _main(argv: list[str]) -> int:
    if argv not in (["flags"], ["cmake-args"]):
        print("usage: python -m evoforge.llm.cpu_build flags|cmake-args", file=sys.stderr)
        return 2
    if platform.machine() not in ("x86_64", "AMD64"):
        print("")  # elsewhere llama.cpp's own defaults (a native build) are the right choice
        return 0
    extensions = build_extensions(cpu_flags())
    print(" ".join(extensions) if argv == ["flags"] else cmake_args(extensions))
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
