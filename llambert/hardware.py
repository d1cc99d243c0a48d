"""What the machine computes fast: bf16 only where the hardware has it.

On a CPU without native bf16 (no AVX512_BF16, no AMX; e.g. AVX2-only EPYC/Xeon VMs) PyTorch
emulates bf16 matrix products: measured here, 1.3 GFLOP/s against 117-138 for fp32, so a bf16
default turns a one-hour run into days. ``auto`` settings resolve through this module.
"""

from __future__ import annotations

import functools
from pathlib import Path

_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags") or line.startswith("Features"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


@functools.lru_cache(maxsize=1)
def native_bf16() -> bool:
    """True on a CUDA GPU or a CPU with bf16 instructions (AVX512_BF16 or AMX)."""
    try:
        import torch

        if torch.cuda.is_available():
            return True
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass
    return any(f in cpu_flags() for f in _BF16_FLAGS)


def resolve_dtype(setting: str) -> str:
    """``auto`` -> ``bfloat16`` where it is native, else ``float32``; other values pass through."""
    if setting != "auto":
        return setting
    return "bfloat16" if native_bf16() else "float32"


def resolve_bf16(setting: bool | str) -> bool:
    """The student's ``bf16`` setting: True/False as given, ``auto`` from the hardware."""
    if setting == "auto":
        return native_bf16()
    return bool(setting)


def cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return False


def resolve_device(setting: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; ``cpu``/``cuda`` pass through (make_teacher
    refuses ``cuda`` without a GPU)."""
    if setting != "auto":
        return setting
    return "cuda" if cuda_available() else "cpu"
