"""Our diffusers export, read by diffusers and transformers as it is: a check run outside the package
(which never imports either library).

    PYTHONPATH=/path/to/diffusers-and-transformers python docs/diffusers_round_trip.py            # toy
    PYTHONPATH=... python docs/diffusers_round_trip.py --preset sd2-inpaint   # full size, random weights: ~14 GB

save_checkpoint(models, folder, "diffusers") is loaded back with diffusers' UNet2DConditionModel,
AutoencoderKL and ControlNetModel, transformers' CLIPTextModel and CLIPTokenizer, and the whole folder
with DiffusionPipeline (toy only). Each load must report no missing, unexpected or mismatched keys and
log nothing at warning level (low_cpu_mem_usage=False is passed: without the `accelerate` package
diffusers warns that it falls back to it, which says nothing about the files); one step of each network (ControlNet + U-Net on the same noisy latents,
a VAE encode and decode, the text encoder) must agree with ours within 1e-4, and the tokenizer's ids
with ours exactly. Prints one JSON line per check; exits 1 if any fails.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from salient_outpaint.checkpoints import save_checkpoint  # noqa: E402
from salient_outpaint.config import PRESETS  # noqa: E402
from salient_outpaint.loading import load_models  # noqa: E402
from salient_outpaint.modules.models import build_models  # noqa: E402
from salient_outpaint.modules.text import Tokenizer  # noqa: E402

TOLERANCE = 1e-4
PROMPT = "a red star in front of a brick wall, photographed on a sunny day"


class Recorder(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records = []

    def emit(self, record):
        self.records.append(f"{record.name}: {record.getMessage()}")


def loaded(load, *args, **kwargs):
    """(model, problems): the missing/unexpected/mismatched keys and every warning logged or raised."""
    recorder = Recorder()
    loggers = [logging.getLogger(name) for name in ("diffusers", "transformers")]
    for logger in loggers:
        logger.addHandler(recorder)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = load(*args, **kwargs)
    finally:
        for logger in loggers:
            logger.removeHandler(recorder)
    model, info = result if isinstance(result, tuple) else (result, {})
    problems = [f"{kind}: {keys}" for kind, keys in info.items() if keys and kind != "error_msgs"]
    problems += recorder.records + [f"warning: {warning.message}" for warning in caught]
    return model, problems


def report(name: str, problems: list[str], difference: float | None = None) -> bool:
    ok = not problems and (difference is None or difference <= TOLERANCE)
    print(json.dumps({"check": name, "ok": ok, "max_abs_difference": difference, "problems": problems}))
    return ok


@torch.no_grad()
def main() -> int:
    import diffusers
    import transformers

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="toy")
    args = parser.parse_args()
    torch.manual_seed(0)
    ours = load_models() if args.preset == "toy" else build_models(PRESETS[args.preset])
    config = ours.config
    results = []
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        save_checkpoint(ours, folder, "diffusers")

        size = config.image_size // config.vae.downsample_factor
        latents = torch.randn(2, config.unet.in_channels, size, size)
        timesteps = torch.tensor([999, 500])
        context = torch.randn(2, config.text.context_length, config.text.width)
        control_image = torch.rand(2, 3, config.image_size, config.image_size)

        controlnet, problems = loaded(diffusers.ControlNetModel.from_pretrained, folder / "controlnet",
                                      output_loading_info=True, low_cpu_mem_usage=False)
        down, mid = controlnet(latents, timesteps, context, controlnet_cond=control_image, conditioning_scale=0.7,
                               return_dict=False)
        residuals = ours.controlnet(latents, timesteps, context, control_image, conditioning_scale=0.7)
        difference = max([(a - b).abs().max().item() for a, b in zip(down, residuals.down)]
                         + [(mid - residuals.mid).abs().max().item()])
        results.append(report("controlnet", problems, difference))
        del controlnet

        unet, problems = loaded(diffusers.UNet2DConditionModel.from_pretrained, folder / "unet",
                                output_loading_info=True, low_cpu_mem_usage=False)
        theirs = unet(latents, timesteps, context, down_block_additional_residuals=down,
                      mid_block_additional_residual=mid).sample
        difference = (theirs - ours.unet(latents, timesteps, context, residuals)).abs().max().item()
        results.append(report("unet + controlnet residuals", problems, difference))
        del unet

        vae, problems = loaded(diffusers.AutoencoderKL.from_pretrained, folder / "vae", output_loading_info=True,
                               low_cpu_mem_usage=False)
        image = torch.rand(1, 3, config.image_size, config.image_size) * 2 - 1
        posterior = vae.encode(image).latent_dist
        difference = max((posterior.mean - ours.vae.encode(image).mean).abs().max().item(),
                         (vae.decode(posterior.mean).sample - ours.vae.decode(posterior.mean)).abs().max().item())
        results.append(report("vae", problems, difference))
        del vae

        tokenizer, problems = loaded(transformers.CLIPTokenizer.from_pretrained, folder / "tokenizer")
        tokens = Tokenizer(config.text.context_length)([PROMPT, ""])
        theirs = tokenizer([PROMPT, ""], padding="max_length", max_length=config.text.context_length,
                           return_tensors="pt").input_ids
        results.append(report("tokenizer", problems + ([] if torch.equal(theirs, tokens) else
                                                       [f"token ids differ: {theirs[0, :12]} vs {tokens[0, :12]}"])))

        text_encoder, problems = loaded(transformers.CLIPTextModel.from_pretrained, folder / "text_encoder",
                                        output_loading_info=True, low_cpu_mem_usage=False)
        difference = (text_encoder(tokens).last_hidden_state - ours.text_encoder(tokens)).abs().max().item()
        results.append(report("text_encoder", problems, difference))
        del text_encoder

        if args.preset == "toy":
            pipeline, problems = loaded(diffusers.DiffusionPipeline.from_pretrained, folder,
                                        low_cpu_mem_usage=False)
            results.append(report(f"pipeline ({type(pipeline).__name__})", problems))
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
