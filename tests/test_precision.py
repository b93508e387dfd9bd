"""One dtype vocabulary for every tool, defaults by device, and a word where half precision is slow."""
import warnings

import pytest
import torch

from salient_outpaint import precision
from salient_outpaint.precision import resolve_dtype, slow_dtype_warning
from salient_outpaint.training.config import TrainConfig, frozen_dtype


def test_defaults_are_fp16_on_a_gpu_and_fp32_on_a_cpu():
    assert resolve_dtype(None, "cpu") == torch.float32
    assert resolve_dtype(None, "cuda") == torch.float16
    assert frozen_dtype(TrainConfig(), torch.device("cpu")) == torch.float32
    assert frozen_dtype(TrainConfig(), torch.device("cuda")) == torch.float16


def test_bf16_on_a_cpu_without_native_bf16_is_called_slow_and_named_fp32_instead():
    message = slow_dtype_warning("bf16", "cpu", native_bf16=False)
    assert "bf16 on this CPU" in message and "no native bf16" in message and "--dtype fp32" in message
    assert "x slower than fp32" in message and "\n" not in message
    assert slow_dtype_warning("bf16", "cpu", native_bf16=True) is None
    assert slow_dtype_warning("bf16", "cuda", native_bf16=False) is None
    assert slow_dtype_warning("fp32", "cpu", native_bf16=False) is None


def test_fp16_on_a_cpu_is_called_slow():
    assert "fp16 on a CPU" in slow_dtype_warning("fp16", "cpu", flag="--frozen-dtype")
    assert "--frozen-dtype fp32" in slow_dtype_warning("fp16", "cpu", flag="--frozen-dtype")
    assert slow_dtype_warning("fp16", "cuda") is None


def test_resolving_warns_once_where_the_cpu_check_says_so(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    with pytest.warns(UserWarning, match=r"bf16 on this CPU .* use --frozen-dtype fp32"):
        assert resolve_dtype("bf16", "cpu", "--frozen-dtype") == torch.bfloat16
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_dtype(torch.bfloat16, "cpu") == torch.bfloat16


def test_unknown_dtype_names_the_choices():
    with pytest.raises(ValueError, match="--dtype must be one of fp32, bf16, fp16"):
        resolve_dtype("fp8", "cpu")
    with pytest.raises(ValueError, match="frozen_dtype must be fp32, bf16, fp16"):
        TrainConfig(frozen_dtype="half")


def test_sample_and_evaluate_share_the_flag():
    import evaluate
    import sample

    assert sample.parse_args(["--dtype", "bf16"]).dtype == "bf16"
    assert sample.parse_args([]).dtype is None
    assert evaluate.parse_args(["--dtype", "fp16"]).dtype == "fp16"
    with pytest.raises(SystemExit):
        sample.parse_args(["--dtype", "float8"])
