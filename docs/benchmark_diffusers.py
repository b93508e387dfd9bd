"""The diffusers side of `python -m salient_outpaint.benchmark`: the same work item, on the same files,
in diffusers + transformers. Run by the benchmark in its own process, with a python that has them:

    python docs/benchmark_diffusers.py ITEM DTYPE CACHE STEPS     # ITEM: load, step or decode

Prints one JSON line with the same figures as ours (seconds, peak RSS, RSS after imports). The
weights in CACHE/sd2 are the diffusers folder our benchmark wrote; the config.json files diffusers
and transformers need next to them (the stable-diffusion-2-inpainting configuration) are written
here once. It lives outside the package, which never imports diffusers.
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
from safetensors.torch import load_file
from transformers import CLIPTextConfig, CLIPTextModel

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

# stabilityai/stable-diffusion-2-inpainting's unet/config.json and vae/config.json (the fields that differ
# from diffusers' defaults) and its text encoder's: OpenCLIP ViT-H/14's text tower with 23 blocks.
UNET_CONFIG = {"_class_name": "UNet2DConditionModel", "sample_size": 64, "in_channels": 9, "out_channels": 4,
               "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
               "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
               "block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2,
               "attention_head_dim": [5, 10, 20, 20], "cross_attention_dim": 1024, "use_linear_projection": True}
VAE_CONFIG = {"_class_name": "AutoencoderKL", "in_channels": 3, "out_channels": 3, "latent_channels": 4,
              "down_block_types": ["DownEncoderBlock2D"] * 4, "up_block_types": ["UpDecoderBlock2D"] * 4,
              "block_out_channels": [128, 256, 512, 512], "layers_per_block": 2, "sample_size": 512}
TEXT_CONFIG = dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                   num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu", projection_dim=512)


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


def write_configs(folder: Path) -> None:
    for name, config in (("unet", UNET_CONFIG), ("vae", VAE_CONFIG)):
        if not (folder / name / "config.json").is_file():
            (folder / name / "config.json").write_text(json.dumps(config, indent=2))
    if not (folder / "text_encoder" / "config.json").is_file():
        CLIPTextConfig(**TEXT_CONFIG).save_pretrained(folder / "text_encoder")


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main(item: str, dtype_name: str, cache: str, steps: str) -> None:
    baseline = rss_mb()
    folder, dtype = Path(cache) / "sd2", DTYPES[dtype_name]
    write_configs(folder)
    inputs = {key: value.to(dtype) if value.is_floating_point() else value
              for key, value in load_file(str(Path(cache) / "inputs.safetensors")).items()}
    figures, networks = {}, {}
    if item == "decode":
        figures["load_s"] = timed(lambda: networks.update(
            vae=AutoencoderKL.from_pretrained(folder / "vae", torch_dtype=dtype)))
        with torch.no_grad():
            figures["work_s"] = timed(lambda: networks["vae"].decode(inputs["latents"]))
    else:
        def load():
            networks["unet"] = UNet2DConditionModel.from_pretrained(folder / "unet", torch_dtype=dtype)
            networks["controlnet"] = ControlNetModel.from_pretrained(folder / "controlnet", torch_dtype=dtype)
            networks["vae"] = AutoencoderKL.from_pretrained(folder / "vae", torch_dtype=dtype)
            networks["text_encoder"] = CLIPTextModel.from_pretrained(folder / "text_encoder", torch_dtype=dtype)

        figures["load_s"] = timed(load)
    if item == "step":
        sample, timesteps, context = inputs["latent_input"], inputs["timesteps"], inputs["context"]

        def step():
            down, mid = networks["controlnet"](sample, timesteps, context, controlnet_cond=inputs["control_image"],
                                               return_dict=False)
            networks["unet"](sample, timesteps, context, down_block_additional_residuals=down,
                             mid_block_additional_residual=mid)

        with torch.no_grad():
            figures["first_step_s"] = timed(step)
            figures["work_s"] = statistics.median(timed(step) for _ in range(int(steps)))
    with open("/proc/self/status") as status:  # VmHWM: ru_maxrss would carry the parent's RSS over fork + exec
        peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024
    print(json.dumps({**figures, "baseline_mb": baseline, "peak_mb": peak}))


if __name__ == "__main__":
    main(*sys.argv[1:])
