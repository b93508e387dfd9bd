"""Which dtype the networks are stored and run in, chosen to fit the machine.

One vocabulary for every tool: `--dtype` of sample.py and evaluate.py, `--frozen-dtype` (and the
autocast `--precision`) of train.py. Half precision halves the memory of the weights everywhere,
but it is only *fast* where the hardware computes in it: GPUs do (fp16 and bf16), while a CPU
without native bf16 instructions (AVX-512 BF16 or AMX on x86) emulates bf16 convolutions, and no
CPU computes fp16 convolutions natively. There we say what it costs before it is paid.
"""
from __future__ import annotations

import platform
import warnings
from pathlib import Path

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# Measured on a 2-core AVX2 CPU (see README, "Measured"): one 320-channel 3x3 convolution.
CPU_SLOWDOWN = {"bf16": "~60x", "fp16": "~25x"}


def default_dtype(device: torch.device | str) -> str:
    """fp16 where it is fast and the memory is scarce (a GPU), fp32 on a CPU."""
    return "fp16" if torch.device(device).type == "cuda" else "fp32"


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bf16 itself (x86: AVX-512 BF16 or AMX; Arm: the BF16 extension)."""
    if platform.machine().lower() in ("x86_64", "amd64", "i386", "i686"):
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    cpuinfo = Path("/proc/cpuinfo")
    return cpuinfo.is_file() and " bf16" in cpuinfo.read_text()


def cpu_description() -> str:
    return torch.backends.cpu.get_cpu_capability()  # e.g. "AVX2", "AVX512"


def slow_dtype_warning(name: str, device: torch.device | str, flag: str = "--dtype",
                       native_bf16: bool | None = None) -> str | None:
    """One line saying what `name` costs on `device`, or None where it costs nothing extra.
    `native_bf16` overrides the CPU check (tests force both answers)."""
    if torch.device(device).type != "cpu" or name == "fp32":
        return None
    if name == "bf16":
        if native_bf16 if native_bf16 is not None else cpu_has_native_bf16():
            return None
        return (f"bf16 on this CPU ({cpu_description()}, no native bf16) runs convolutions {CPU_SLOWDOWN['bf16']} "
                f"slower than fp32; use {flag} fp32 unless memory is what you lack")
    return (f"fp16 on a CPU runs convolutions {CPU_SLOWDOWN['fp16']} slower than fp32 (no CPU computes fp16 "
            f"natively); use {flag} fp32")


def resolve_dtype(name: str | torch.dtype | None, device: torch.device | str, flag: str = "--dtype") -> torch.dtype:
    """'fp32' / 'bf16' / 'fp16' (None: the device's default) -> torch dtype, warning once when it is slow here."""
    if isinstance(name, torch.dtype):
        name = next((key for key, value in DTYPES.items() if value == name), str(name))
    name = name or default_dtype(device)
    if name not in DTYPES:
        raise ValueError(f"{flag} must be one of {', '.join(DTYPES)}, not {name!r}")
    message = slow_dtype_warning(name, device, flag)
    if message:
        warnings.warn(message, stacklevel=2)
    return DTYPES[name]


def add_dtype_argument(parser, flag: str = "--dtype", what: str = "the networks are stored and run in") -> None:
    """The shared command-line flag: choices fp32/bf16/fp16, default by device (None until resolved)."""
    parser.add_argument(flag, choices=list(DTYPES), default=None,
                        help=f"dtype {what} (default: fp16 on a GPU, fp32 on a CPU; half precision halves the "
                             "memory, and on a CPU without native support costs a lot of speed)")
