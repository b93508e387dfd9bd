"""Loading in place: networks built on the meta device and filled tensor by tensor, in the dtype
asked for; what a checkpoint does not hold (computed tensors) still exists; a file is read one
tensor at a time; a saved full-size U-Net loads without a second copy in memory."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from salient_outpaint.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from salient_outpaint.checkpoints.io import open_state_dict, save_state_dict
from salient_outpaint.config import SD2_INPAINT, TOY
from salient_outpaint.loading import TOY_WEIGHTS, load_models
from salient_outpaint.modules import ControlNet, UNet, build_models
from salient_outpaint.modules.models import empty_models

ROOT = Path(__file__).resolve().parents[1]


def every_tensor(module):
    return list(module.named_parameters()) + list(module.named_buffers())


def test_loading_in_place_fills_every_tensor_like_loading_into_built_networks():
    """The same toy model through both routes; no tensor left on the meta device (parameters and
    buffers, persistent or not), and the outputs agree, which also covers tensors a checkpoint never
    holds (the text encoder's causal attention masks nothing stored)."""
    in_place = load_models()
    built = build_models(TOY)
    load_checkpoint(TOY_WEIGHTS, built)
    for name, module in in_place.components().items():
        assert not [key for key, tensor in every_tensor(module) if tensor.is_meta], name
        reference = dict(every_tensor(built.components()[name]))
        for key, tensor in every_tensor(module):
            assert torch.equal(tensor, reference[key]), f"{name}.{key}"
    tokens = torch.randint(0, 1000, (2, 77))
    with torch.no_grad():
        torch.testing.assert_close(in_place.text_encoder(tokens), built.text_encoder(tokens), rtol=0, atol=0)


@pytest.mark.filterwarnings("ignore:fp16 on a CPU")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_is_loaded_as_half_precision(dtype):
    models = load_models(dtype=dtype)
    for name, module in models.components().items():
        assert {tensor.dtype for _, tensor in module.named_parameters()} == {dtype}, name


def test_empty_models_hold_no_memory_and_take_the_dtype():
    models = empty_models(TOY, dtype=torch.bfloat16)
    for module in models.components().values():
        assert all(tensor.is_meta and tensor.dtype == torch.bfloat16 for _, tensor in module.named_parameters())


def test_a_file_is_read_one_tensor_at_a_time(tmp_path):
    """Cutting the end off a file leaves the tensors before the cut readable: nothing reads the whole."""
    path = tmp_path / "two.safetensors"
    save_file({"first": torch.arange(4.0), "second": torch.arange(1000.0)}, str(path))
    with open(path, "r+b") as file:
        file.truncate(path.stat().st_size - 100)
    tensors = open_state_dict(path)
    assert set(tensors) == {"first", "second"} and "second" in tensors
    assert torch.equal(tensors["first"], torch.arange(4.0))
    with pytest.raises(CheckpointError, match="truncated: second"):
        tensors["second"]


def test_controlnet_from_the_loaded_unet_owns_its_copy():
    models = load_models(with_controlnet=False)
    controlnet = ControlNet.from_unet(models.unet, TOY.controlnet, dtype=torch.float32)
    unet_weights = models.unet.state_dict()
    for key, value in controlnet.state_dict().items():
        if key in unet_weights:
            assert torch.equal(value, unet_weights[key])
            assert value.untyped_storage().data_ptr() != unet_weights[key].untyped_storage().data_ptr(), key
        assert not value.is_meta, key


def test_the_text_encoders_q_k_v_load_without_a_copy_from_either_layout(tmp_path):
    """OpenCLIP (and ldm) fuse q|k|v into one in_proj tensor, Hugging Face CLIP keeps them apart: ours
    keeps them apart too, and takes each as it is stored: in fp32, each of ours is the file's own
    memory-mapped bytes (a storage torch did not allocate, so not resizable), from the fused tensor
    a third of it (its storage holds all three), never a concatenated or copied tensor."""
    from salient_outpaint.checkpoints.loader import ldm_maps
    from salient_outpaint.checkpoints.keymap import to_foreign

    source = build_models(TOY)
    fused = to_foreign(source.text_encoder.state_dict(), ldm_maps(source)["text_encoder"])
    save_file(fused, str(tmp_path / "open_clip.safetensors"))
    save_checkpoint(source, tmp_path / "diffusers", "diffusers", components=["text_encoder"])
    for checkpoint in (tmp_path / "open_clip.safetensors", tmp_path / "diffusers"):
        models = empty_models(TOY, with_controlnet=False)
        assert load_checkpoint(checkpoint, models) == ["text_encoder"]
        for block, reference in zip(models.text_encoder.transformer.resblocks, source.text_encoder.transformer.resblocks):
            projections = (block.attn.to_q.weight, block.attn.to_k.weight, block.attn.to_v.weight)
            for ours, theirs in zip(projections, (reference.attn.to_q.weight, reference.attn.to_k.weight,
                                                  reference.attn.to_v.weight)):
                assert torch.equal(ours, theirs)
                assert not ours.untyped_storage().resizable(), f"{checkpoint.name}: a copy"
                parts = 3 if checkpoint.suffix else 1
                assert ours.untyped_storage().nbytes() == parts * ours.numel() * ours.element_size()


PEAK_SCRIPT = """
import json, sys, torch
from salient_outpaint.checkpoints import load_checkpoint
from salient_outpaint.config import SD2_INPAINT
from salient_outpaint.modules.models import Models, empty_models
def rss_mb():
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS")) / 1024
baseline = rss_mb()
models = empty_models(SD2_INPAINT, with_controlnet=False, dtype=getattr(torch, sys.argv[2]))
load_checkpoint(sys.argv[1], models)
# VmHWM, not ru_maxrss: that one carries the (big) parent's RSS over fork + exec
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")) / 1024
print(json.dumps({"baseline_mb": baseline, "peak_mb": peak}))
"""


@pytest.mark.slow
def test_loading_a_full_size_unet_holds_no_second_copy(tmp_path):
    """A saved SD2 U-Net (random weights, 3.3 GiB in fp32) loads in a fresh process with a peak
    RSS (above the process's RSS after its imports) under 1.3x the file, and under 1.3x half the
    file when loaded in bf16: no random-init copy, no whole-file read, no fp32 copy of a bf16 network."""
    torch.manual_seed(0)
    path = tmp_path / "diffusion_pytorch_model.safetensors"
    save_state_dict(UNet(SD2_INPAINT.unet).state_dict(), path)
    size_mb = path.stat().st_size / 2**20
    for dtype, share in (("float32", 1.0), ("bfloat16", 0.5)):
        result = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(path), dtype], cwd=ROOT, capture_output=True,
                                text=True, check=True)
        figures = json.loads(result.stdout)
        grown = figures["peak_mb"] - figures["baseline_mb"]
        assert grown < 1.3 * share * size_mb, f"{dtype}: {grown:.0f} MB for a {size_mb:.0f} MB file"
