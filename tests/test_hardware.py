"""dtype 'auto' resolves from the hardware: bf16 only where it is native."""

from llambert import hardware
from llambert.config import Settings


def test_explicit_dtypes_pass_through():
    assert hardware.resolve_dtype("float32") == "float32"
    assert hardware.resolve_dtype("bfloat16") == "bfloat16"
    assert hardware.resolve_bf16(True) is True and hardware.resolve_bf16(False) is False


def test_auto_follows_the_cpu_flags(monkeypatch):
    hardware.native_bf16.cache_clear()
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert hardware.resolve_dtype("auto") == "float32" and hardware.resolve_bf16("auto") is False
    hardware.native_bf16.cache_clear()
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx2", "avx512_bf16"}))
    assert hardware.resolve_dtype("auto") == "bfloat16" and hardware.resolve_bf16("auto") is True
    hardware.native_bf16.cache_clear()


def test_defaults_are_auto():
    s = Settings()
    assert s.teacher.dtype == "auto" and s.student.bf16 == "auto"
