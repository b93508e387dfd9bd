"""flops.py: FLOPs per image counted on the meta device equal those of a real run, and the `fast`
preset's bound against `authors` at SD2's full size."""
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from salient_outpaint.config import PRESETS, TOY
from salient_outpaint.flops import image_flops
from salient_outpaint.modules import build_models
from salient_outpaint.modules.models import empty_models
from salient_outpaint.options import SAMPLING_PRESETS, SamplingOptions
from salient_outpaint.pipeline import OutpaintPipeline


@pytest.mark.parametrize("options", [SamplingOptions(steps=3, guidance=3.0),
                                     SamplingOptions(steps=5, guidance=3.0, sampler="unipc", cache_interval=2,
                                                     reuse_guidance=True, guidance_end=0.8)],
                         ids=["plain", "cache-reuse-guidance-end"])
def test_counting_on_the_meta_device_equals_counting_a_real_run(options):
    torch.manual_seed(0)
    pipeline = OutpaintPipeline(build_models(TOY))
    image, mask = torch.rand(3, 64, 64) * 2 - 1, torch.zeros(1, 64, 64)
    mask[:, 16:40, 16:40] = 1
    # The math backend of attention, as on the meta device: the CPU's fused kernel is not counted by
    # torch.utils.flop_counter (it would leave attention out).
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        pipeline(image, mask, "a red star in front of a brick wall", options=options,
                 generator=torch.Generator().manual_seed(0))
    parts = image_flops(empty_models(TOY), options, 64, 64)
    assert parts["total"] == counter.get_total_flops() > 0
    assert parts["total"] == parts["text"] + parts["vae_encode"] + parts["denoising"] + parts["vae_decode"]


def test_fewer_network_evaluations_count_fewer_flops():
    models = empty_models(TOY)
    plain = image_flops(models, SamplingOptions(steps=6, guidance=3.0), 64, 64)["denoising"]
    unguided_half = image_flops(models, SamplingOptions(steps=6, guidance=3.0, guidance_end=0.5), 64, 64)["denoising"]
    cached = image_flops(models, SamplingOptions(steps=6, guidance=3.0, cache_interval=2), 64, 64)["denoising"]
    assert unguided_half == pytest.approx(0.75 * plain)  # 3 of 6 steps on half the batch
    assert cached < plain


@pytest.mark.slow
def test_fast_costs_at_most_0_30_of_authors_at_sd2_full_size():
    models = empty_models(PRESETS["sd2-inpaint"])
    authors = image_flops(models, SAMPLING_PRESETS["authors"])
    fast = image_flops(models, SAMPLING_PRESETS["fast"])
    assert 40e12 < authors["total"] < 55e12  # SD2 at 512 x 512: ~2.2 TFLOPs per guided step, 20 steps
    assert fast["total"] <= 0.30 * authors["total"]
