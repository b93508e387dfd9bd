"""One 512 x 512 image end to end on a GPU: our pipeline against the authors' own, same weights, same settings.

    git --git-dir=PATH/TO/yahoo/photo-background-generation show HEAD:pipeline_controlnet_inpaint.py \
        > /tmp/authors_pipeline.py
    python docs/benchmark_gpu.py --authors-pipeline /tmp/authors_pipeline.py --out results.jsonl
    python docs/benchmark_gpu.py ... --config mini --size 64 --steps 2 --device cpu --dtype fp32   # a dry run

Full-size SD2-inpainting + ControlNet with random weights (speed does not depend on their values), written
once as a diffusers folder that both sides read. The authors' StableDiffusionControlNetInpaintPipeline
(yahoo/photo-background-generation) and our OutpaintPipeline run the notebook's settings: UniPC, 20 steps,
guidance 7.5, ControlNet scale 1.0, one image, a 512 x 512 photo and its mask; our pipeline also runs
`--preset-sampling fast` (side "fast"). Timed: the whole call
(our side encodes the prompt inside it; the authors' pipeline gets the prompt embeddings precomputed, as
there is no tokenizer without a download), after one warm-up call; each variant eager and with
torch.compile of the U-Net, the ControlNet and the VAE's encoder and decoder (the same four networks on
both sides). Each side runs its warm-up and its timed calls in a row (a GPU's timings hold still, and a
compilation cut short by a time limit then loses only its own row); the median call is reported, with
peak GPU memory from torch.cuda.max_memory_allocated. It lives outside the package, which never imports
diffusers.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from salient_outpaint.checkpoints import load_checkpoint, save_checkpoint  # noqa: E402
from salient_outpaint.config import SD2_INPAINT, TextEncoderConfig, UNetConfig, VAEConfig  # noqa: E402
from salient_outpaint.modules import build_models  # noqa: E402
from salient_outpaint.modules.models import compile_models, empty_models  # noqa: E402
from salient_outpaint.options import SAMPLING_PRESETS  # noqa: E402
from salient_outpaint.pipeline import OutpaintPipeline  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# SD2's shape at a fraction of the width, for a dry run of this script on a CPU.
MINI = replace(SD2_INPAINT, name="mini",
               unet=UNetConfig(block_out_channels=(32, 64, 128, 128), attention_head_dim=16, cross_attention_dim=64),
               vae=VAEConfig(block_out_channels=(32, 32, 64, 64)),
               text=TextEncoderConfig(width=64, heads=4, layers=2, checkpoint_layers=2))
CONFIGS = {"sd2": SD2_INPAINT, "mini": MINI}
PROMPT, NEGATIVE = "a perfume bottle on a wet rock at sunset", ""


def diffusers_configs(config) -> dict[str, dict]:
    """The config.json files diffusers and transformers read, from our config (SD2's values for "sd2")."""
    unet = config.unet
    heads = [channels // unet.attention_head_dim for channels in unet.block_out_channels]
    down = ["CrossAttnDownBlock2D" if attention else "DownBlock2D" for attention in unet.cross_attention_levels]
    up = ["CrossAttnUpBlock2D" if attention else "UpBlock2D" for attention in reversed(unet.cross_attention_levels)]
    shared = {"block_out_channels": list(unet.block_out_channels), "layers_per_block": unet.layers_per_block,
              "attention_head_dim": heads, "cross_attention_dim": unet.cross_attention_dim,
              "use_linear_projection": True, "norm_num_groups": unet.norm_groups, "down_block_types": down}
    vae = config.vae
    return {
        "unet": {"_class_name": "UNet2DConditionModel", "in_channels": unet.in_channels,
                 "out_channels": unet.out_channels, "up_block_types": up, **shared},
        "controlnet": {"_class_name": "ControlNetModel", "in_channels": config.controlnet.in_channels,
                       "conditioning_embedding_out_channels": list(config.controlnet.conditioning_embedding_channels),
                       **shared},
        "vae": {"_class_name": "AutoencoderKL", "in_channels": 3, "out_channels": 3,
                "latent_channels": vae.latent_channels, "block_out_channels": list(vae.block_out_channels),
                "down_block_types": ["DownEncoderBlock2D"] * len(vae.block_out_channels),
                "up_block_types": ["UpDecoderBlock2D"] * len(vae.block_out_channels),
                "layers_per_block": vae.layers_per_block, "norm_num_groups": vae.norm_groups,
                "scaling_factor": vae.scaling_factor},
    }


def write_weights(config, folder: Path, device: str, dtype: torch.dtype) -> None:
    """Random weights as a diffusers folder (once), with every config.json both sides need."""
    if not (folder / "unet").is_dir():
        torch.manual_seed(0)
        with torch.device(device):  # a GPU draws 1.6 billion random weights in a moment
            models = build_models(config)
        for network in models.components().values():
            network.to(device="cpu", dtype=dtype)
        save_checkpoint(models, folder, "diffusers")
    for name, values in diffusers_configs(config).items():
        (folder / name / "config.json").write_text(json.dumps(values, indent=2))
    from transformers import CLIPTextConfig
    text = config.text
    CLIPTextConfig(vocab_size=text.vocab_size, hidden_size=text.width, intermediate_size=4 * text.width,
                   num_hidden_layers=text.layers, num_attention_heads=text.heads,
                   max_position_embeddings=text.context_length, hidden_act="gelu",
                   projection_dim=512).save_pretrained(folder / "text_encoder")


def authors_pipeline(path: str, folder: Path, dtype: torch.dtype, device: str):
    # The file was written for diffusers 0.2x; two names have moved since (as in tests/fixtures).
    source = (Path(path).read_text().replace("LoraLoaderMixin", "StableDiffusionLoraLoaderMixin")
              .replace("diffusers.pipelines.controlnet.multicontrolnet", "diffusers.models.controlnets.multicontrolnet"))
    patched = Path("/tmp/authors_pipeline_patched.py")
    patched.write_text(source)
    spec = importlib.util.spec_from_file_location("authors_pipeline", patched)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel, UniPCMultistepScheduler
    from transformers import CLIPTextModel
    scheduler = UniPCMultistepScheduler.from_config({  # stable-diffusion-2-inpainting's scheduler_config.json
        "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
        "prediction_type": "epsilon", "steps_offset": 1, "clip_sample": False, "set_alpha_to_one": False})
    pipeline = module.StableDiffusionControlNetInpaintPipeline(
        vae=AutoencoderKL.from_pretrained(folder / "vae", torch_dtype=dtype),
        text_encoder=CLIPTextModel.from_pretrained(folder / "text_encoder", torch_dtype=dtype), tokenizer=None,
        unet=UNet2DConditionModel.from_pretrained(folder / "unet", torch_dtype=dtype),
        controlnet=ControlNetModel.from_pretrained(folder / "controlnet", torch_dtype=dtype), scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False).to(device)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def scene(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A photo (3, H, W) in [-1, 1] and its object mask (1, H, W): an ellipse in the middle."""
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(3, size, size, generator=generator) * 2 - 1
    y, x = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    mask = ((x / 0.4) ** 2 + (y / 0.6) ** 2 <= 1).float()[None]
    return image, mask


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--authors-pipeline", required=True, help="pipeline_controlnet_inpaint.py of the authors")
    parser.add_argument("--config", choices=CONFIGS, default="sd2")
    parser.add_argument("--weights", default="/tmp/bench_gpu", help="the diffusers folder, written once")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--calls", type=int, default=5, help="timed calls per side, after a warm-up")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", choices=DTYPES, default="fp16")
    parser.add_argument("--modes", nargs="+", choices=["eager", "compile"], default=["eager", "compile"])
    parser.add_argument("--sides", nargs="+", choices=["ours", "fast", "authors"], default=["ours", "fast", "authors"],
                        help="ours: the authors' settings (preset `authors`); fast: our `--preset-sampling fast`")
    parser.add_argument("--out", default="benchmark_gpu.jsonl")
    args = parser.parse_args()
    config, dtype, device = CONFIGS[args.config], DTYPES[args.dtype], args.device
    folder = Path(args.weights) / args.config
    start = time.perf_counter()
    write_weights(config, folder, device, dtype)
    print(f"weights ready in {time.perf_counter() - start:.0f} s", flush=True)
    name = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"
    header = {"device": name, "torch": torch.__version__, "dtype": args.dtype, "size": args.size, "steps": args.steps}
    print(json.dumps(header), flush=True)

    image, mask = scene(args.size)
    options = replace(SAMPLING_PRESETS["authors"], steps=args.steps)
    # The authors' inputs: PIL images; mask and control image both the background to paint (white).
    photo_pil = Image.fromarray(((image.permute(1, 2, 0) + 1) * 127.5).round().byte().numpy())
    background_pil = Image.fromarray(((1 - mask[0]) * 255).byte().numpy())

    for mode in args.modes:
        models = empty_models(config, True, dtype)
        load_checkpoint(folder, models, device=device)
        ours = OutpaintPipeline(models, device)
        theirs = authors_pipeline(args.authors_pipeline, folder, dtype, device)
        with torch.no_grad():
            tokens = ours.tokenizer([PROMPT, NEGATIVE]).to(device)
            prompt_embeds = theirs.text_encoder(tokens[:1])[0]
            negative_embeds = theirs.text_encoder(tokens[1:])[0]
        if mode == "compile":
            compile_models(models)
            for network in (theirs.unet, theirs.controlnet, theirs.vae.encoder, theirs.vae.decoder):
                network.compile(fullgraph=False)

        def call_ours(sampling=options):
            return ours(image, mask, PROMPT, NEGATIVE, num_images=1, options=sampling,
                        generator=torch.Generator().manual_seed(0))

        def call_fast():
            return call_ours(SAMPLING_PRESETS["fast"])

        def call_theirs():
            return theirs(prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_embeds, image=photo_pil,
                          mask_image=background_pil, control_image=background_pil, height=args.size, width=args.size,
                          num_inference_steps=args.steps, guidance_scale=options.guidance,
                          controlnet_conditioning_scale=options.control_scale, output_type="np",
                          generator=torch.Generator(device).manual_seed(0))

        calls = {side: call for side, call in (("ours", call_ours), ("fast", call_fast), ("authors", call_theirs))
                 if side in args.sides}
        seconds = {}
        for side, call in calls.items():  # each side whole, so a compilation cut short loses only its own row
            synchronize(device)
            began = time.perf_counter()
            call()  # warm-up: cuDNN's algorithm choices, and the compilation with "compile"
            synchronize(device)
            warm_up = time.perf_counter() - began
            seconds[side] = []
            if device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            for _ in range(args.calls):
                synchronize(device)
                began = time.perf_counter()
                call()
                synchronize(device)
                seconds[side].append(time.perf_counter() - began)
            median = statistics.median(seconds[side])
            row = {**header, "mode": mode, "side": side, "warm_up_s": warm_up, "seconds_per_image": median,
                   "all_seconds": seconds[side], "steps_per_second": args.steps / median,
                   "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None}
            for ours_side in ("ours", "fast"):
                if side == "authors" and ours_side in seconds:
                    row[f"{ours_side}_over_authors"] = statistics.median(seconds[ours_side]) / median
            with open(args.out, "a") as log:
                log.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
