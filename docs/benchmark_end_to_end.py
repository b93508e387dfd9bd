"""End to end, one photo: sample.py with --preset-sampling authors and fast, against the authors' own
diffusers pipeline (their StableDiffusionControlNetInpaintPipeline, UniPC, 20 steps, guidance 7.5,
ControlNet scale 1), on the same full-size random SD2-inpainting + ControlNet weights, equal threads.

    python docs/benchmark_end_to_end.py --diffusers-path /work/diffpkgs --authors-pipeline /tmp/authors_pipeline.py \
        --pairs 4 --threads 2 --size 512

The authors' file comes from their repository (git show HEAD:pipeline_controlnet_inpaint.py); it is
patched for today's diffusers as tests/fixtures/make_pipeline_fixtures.py does. Each run is a fresh
process that loads its models, then times the generation of one image (model load excluded; the text
encoder, VAE encode and decode included) and reports its peak memory (VmHWM). The runs alternate
ours-authors, ours-fast, theirs within each pair, so a drifting machine moves all three; the ratios are
taken pair by pair. Lives outside the package, which never imports diffusers.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
PROMPT = "a bottle on a marble table in a bright kitchen"


def peak_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024


def write_inputs(cache: Path, size: int) -> None:
    """The random weights (once) and a size x size photo with its object mask: a toy scene, upscaled."""
    import torch
    import torch.nn.functional as F

    from salient_outpaint.benchmark import make_weights
    from salient_outpaint.data.images import mask_as_image, save_image
    from salient_outpaint.data.synthetic import ToyWorldDataset

    if not (cache / "sd2" / "unet").is_dir():
        make_weights(cache)
    scene = ToyWorldDataset(1, size=64, seed=0, split="test")[0]
    save_image(F.interpolate(scene["image"][None], size=(size, size), mode="bilinear")[0], cache / f"photo_{size}.png")
    mask = F.interpolate(scene["mask"][None], size=(size, size), mode="nearest")[0]
    save_image(mask_as_image(mask), cache / f"mask_{size}.png")
    torch.manual_seed(0)


def ours(cache: Path, size: int, preset: str, threads: int) -> dict:
    """sample.py on the photo, its batch loop timed (models loaded before it)."""
    import torch

    sys.path.insert(0, str(REPOSITORY))
    import sample

    torch.set_num_threads(threads)
    timing = {}
    run_batch = sample.run_batch

    def timed_batch(*args, **kwargs):
        start = time.perf_counter()
        result = run_batch(*args, **kwargs)
        timing["generate_s"] = time.perf_counter() - start
        return result

    sample.run_batch = timed_batch
    out = cache / f"out_{preset}_{size}"
    code = sample.main(["--image", str(cache / f"photo_{size}.png"), "--mask", str(cache / f"mask_{size}.png"),
                        "--prompt", PROMPT, "--checkpoint", str(cache / "sd2"), "--preset", "sd2-inpaint",
                        "--preset-sampling", preset, "--num-images", "1", "--batch-size", "1", "--raw",
                        "--resolution", str(size), "--device", "cpu", "--dtype", "fp32", "--out", str(out),
                        "--overwrite"])
    assert code == 0
    return {"generate_s": timing["generate_s"], "peak_mb": peak_mb()}


def theirs(cache: Path, size: int, threads: int, authors_pipeline: str) -> dict:
    """The authors' pipeline, the same weights, prompt embeddings from the same tokens (open_clip's BPE)."""
    import numpy as np  # noqa: F401
    import torch
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel, UniPCMultistepScheduler
    from PIL import Image
    from transformers import CLIPTextModel

    sys.path.insert(0, str(REPOSITORY))
    sys.path.insert(0, str(REPOSITORY / "docs"))
    from benchmark_diffusers import write_configs

    from salient_outpaint.modules.text import Tokenizer
    from tests.fixtures.make_pipeline_fixtures import authors_pipeline_class
    from tests.fixtures.make_sampling_fixtures import SD2_SCHEDULER

    torch.set_num_threads(threads)
    folder = cache / "sd2"
    write_configs(folder)
    pipeline = authors_pipeline_class(authors_pipeline)(
        vae=AutoencoderKL.from_pretrained(folder / "vae"), text_encoder=CLIPTextModel.from_pretrained(
            folder / "text_encoder"), tokenizer=None, unet=UNet2DConditionModel.from_pretrained(folder / "unet"),
        controlnet=ControlNetModel.from_pretrained(folder / "controlnet"),
        scheduler=UniPCMultistepScheduler.from_config(SD2_SCHEDULER), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    pipeline.set_progress_bar_config(disable=True)
    photo = Image.open(cache / f"photo_{size}.png").convert("RGB")
    background = Image.fromarray(255 - np.asarray(Image.open(cache / f"mask_{size}.png").convert("L")))
    tokenizer = Tokenizer()
    start = time.perf_counter()
    with torch.no_grad():
        embeddings = pipeline.text_encoder(tokenizer(["", PROMPT]))[0]  # (2, 77, 1024)
        pipeline(prompt_embeds=embeddings[1:], negative_prompt_embeds=embeddings[:1], image=photo,
                 mask_image=background, control_image=background, height=size, width=size, num_inference_steps=20,
                 guidance_scale=7.5, controlnet_conditioning_scale=1.0, generator=torch.Generator().manual_seed(0),
                 output_type="np")
    return {"generate_s": time.perf_counter() - start, "peak_mb": peak_mb()}


def worker(args) -> int:
    cache = Path(args.cache)
    if args.worker == "theirs":
        figures = theirs(cache, args.size, args.threads, args.authors_pipeline)
    else:
        figures = ours(cache, args.size, args.worker, args.threads)
    print("RESULT " + json.dumps(figures), flush=True)
    return 0


def run_worker(args, name: str) -> dict:
    environment = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": os.pathsep.join(
        [str(REPOSITORY)] + ([args.diffusers_path] if name == "theirs" else []))}
    command = [sys.executable, __file__, "--worker", name, "--cache", args.cache, "--size", str(args.size),
               "--threads", str(args.threads), "--authors-pipeline", args.authors_pipeline]
    load = os.getloadavg()[0]
    output = subprocess.run(command, env=environment, capture_output=True, text=True)
    lines = [line for line in output.stdout.splitlines() if line.startswith("RESULT ")]
    if output.returncode or not lines:
        raise RuntimeError(f"{name} failed:\n{output.stderr[-3000:]}")
    return {**json.loads(lines[-1][len("RESULT "):]), "load_1min": load}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", default="runs/benchmark_cache", help="weights and inputs (default: %(default)s)")
    parser.add_argument("--size", type=int, default=512, help="the photo's side in pixels (default: 512)")
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--diffusers-path", default="/work/diffpkgs", help="a folder with diffusers + transformers")
    parser.add_argument("--authors-pipeline", default="/tmp/authors_pipeline.py",
                        help="their pipeline_controlnet_inpaint.py")
    parser.add_argument("--worker", choices=["authors", "fast", "theirs"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    write_inputs(Path(args.cache), args.size)
    for path in sorted((Path(args.cache) / "sd2").rglob("*")):  # into the page cache: our loader memory-maps
        if path.is_file():  # the weights, so a cold first run would read the disk during its generation
            with open(path, "rb") as file:
                while file.read(1 << 24):
                    pass
    rows = []
    for pair in range(args.pairs):
        row = {name: run_worker(args, name) for name in ("authors", "fast", "theirs")}
        row["fast_over_theirs"] = row["fast"]["generate_s"] / row["theirs"]["generate_s"]
        row["authors_over_theirs"] = row["authors"]["generate_s"] / row["theirs"]["generate_s"]
        row["fast_memory_over_theirs"] = row["fast"]["peak_mb"] / row["theirs"]["peak_mb"]
        rows.append(row)
        print(json.dumps({"pair": pair, **row}), flush=True)
    print(json.dumps({"size": args.size, "threads": args.threads, "pairs": len(rows),
                      "median_fast_over_theirs": statistics.median(row["fast_over_theirs"] for row in rows),
                      "max_fast_over_theirs": max(row["fast_over_theirs"] for row in rows),
                      "median_authors_over_theirs": statistics.median(row["authors_over_theirs"] for row in rows)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
