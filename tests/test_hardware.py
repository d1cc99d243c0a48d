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


def test_device_auto_is_the_gpu_only_when_torch_sees_one(monkeypatch):
    """teacher.device: auto -> cuda with a GPU, else cpu; and the batch default follows (batching pays on a GPU:
    benchmarks/data/teacher_gpu_h200.json, not on a CPU)."""
    import torch

    from llambert.config import GPU_TEACHER_BATCH, TeacherConfig

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert hardware.resolve_device("auto") == "cpu" and hardware.resolve_device("cuda") == "cuda"
    t = TeacherConfig()
    assert t.resolved_batch_size(hardware.resolve_device(t.device)) == 1
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert hardware.resolve_device("auto") == "cuda" and hardware.resolve_device("cpu") == "cpu"
    assert t.resolved_batch_size(hardware.resolve_device(t.device)) == GPU_TEACHER_BATCH
    cpu = TeacherConfig(device="cpu")
    assert cpu.resolved_batch_size(hardware.resolve_device(cpu.device)) == 1
    assert TeacherConfig(batch_size=4).resolved_batch_size("cuda") == 4
    assert TeacherConfig(backend="vllm").resolved_batch_size("cuda") == 8


def test_teacher_device_cuda_without_a_gpu_is_a_config_error_naming_the_setting(tiny_settings, monkeypatch):
    import pytest
    import torch

    from llambert.config import ConfigError
    from llambert.tasks import load_task
    from llambert.teacher import make_teacher

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    s = tiny_settings.model_copy(deep=True)
    s.teacher.device = "cuda"
    with pytest.raises(ConfigError, match="teacher.device.*cuda.*no CUDA GPU"):
        make_teacher(s, load_task("imdb_sentiment"))
