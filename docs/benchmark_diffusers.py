"""The diffusers side of `python -m salient_outpaint.benchmark`: the same work item, on the same files,
in diffusers + transformers. Run by the benchmark in its own process, with a python that has them:

    python docs/benchmark_diffusers.py ITEM DTYPE CACHE STEPS     # ITEM: load, step, decode or train

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


def train_steps(networks: dict, steps: int) -> float:
    """What our `train` item times (training/loop.py: benchmark): ControlNet training steps at 64x64 pixels,
    batch 1, fp32 AdamW on the ControlNet, the rest frozen, each step encoding its image and masked image
    with the VAE and its caption with the text encoder (our benchmark turns off the trainer's cache of
    caption embeddings: a real dataset's captions are new at each step); seconds per step over `steps`
    steps after a warm-up."""
    for name in ("unet", "vae", "text_encoder"):
        networks[name].requires_grad_(False)
    controlnet = networks["controlnet"].float().train()
    optimizer = torch.optim.AdamW(controlnet.parameters(), lr=1e-5, weight_decay=0.01)
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 64, 64, generator=generator) * 2 - 1
    mask = (torch.rand(1, 1, 64, 64, generator=generator) > 0.5).float()
    control = torch.rand(1, 3, 64, 64, generator=generator)
    dtype = networks["unet"].dtype

    def step():
        with torch.no_grad():
            context = networks["text_encoder"](torch.randint(0, 49408, (1, 77), generator=generator))[0]
            vae = networks["vae"]
            latents = vae.encode(image.to(dtype)).latent_dist.sample(generator) * 0.18215
            masked = vae.encode((image * (1 - mask)).to(dtype)).latent_dist.mode() * 0.18215
        noise = torch.randn(latents.shape, generator=generator, dtype=latents.dtype)
        timesteps = torch.randint(0, 1000, (1,), generator=generator)
        sample = torch.cat([latents * 0.5 + noise * 0.8, mask[:, :, ::8, ::8].to(dtype), masked], dim=1)
        down, mid = controlnet(sample.float(), timesteps, context.float(), controlnet_cond=control,
                               return_dict=False)
        prediction = networks["unet"](sample, timesteps, context, down_block_additional_residuals=[
            residual.to(dtype) for residual in down], mid_block_additional_residual=mid.to(dtype)).sample
        loss = torch.nn.functional.mse_loss(prediction.float(), noise.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(controlnet.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    return sum(timed(step) for _ in range(steps)) / steps


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
    if item == "train":
        figures["work_s"] = train_steps(networks, int(steps))
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
