"""Time and measure the real model, optionally side by side with diffusers.

    python -m salient_outpaint.benchmark                              # load, one sampling step, VAE decode; fp32
    python -m salient_outpaint.benchmark --diffusers-python /path/to/python --pairs 3
    python -m salient_outpaint.benchmark --work load --dtypes fp32 bf16   # what half precision saves
    python -m salient_outpaint.benchmark --work step --compile            # what torch.compile gives
    python -m salient_outpaint.benchmark --work train                     # one ControlNet training step

Full-size SD2-inpainting + the ControlNet, with random weights saved once to --cache as a diffusers
folder, so that diffusers reads the very same files. The work items:
  load    the four networks from that folder, in --dtypes
  step    load, then one sampling step: ControlNet + U-Net on a batch of 2 (classifier-free guidance),
          64x64 latents (a 512x512 image); the median of --steps timed steps after one warm-up
  decode  load the VAE, decode 64x64 latents to a 512x512 image
  train   ControlNet training steps (training/loop.py:benchmark) at 64x64 pixels, batch 1, fp32 AdamW, the
          frozen networks in --dtypes; seconds per step over --steps steps after a warm-up step
Each item runs in a fresh process, which reports its own peak memory (the kernel's RSS high-water
mark) above its RSS after imports. With diffusers (a python that has it, given by path: this package
never imports it), the same item runs in docs/benchmark_diffusers.py, ours and theirs alternating
(A B A B ...) so a drifting machine moves both; the ratio is taken pair by pair, with the machine's
1-minute load average at the start of each pair.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from .checkpoints import load_checkpoint, read_state_dict, save_checkpoint, save_state_dict
from .config import SD2_INPAINT
from .loading import REPOSITORY, load_models
from .modules import build_models
from .modules.models import compile_models, empty_models
from .precision import DTYPES
from .training.config import TrainConfig
from .training.loop import benchmark

DIFFUSERS_WORKER = REPOSITORY / "docs" / "benchmark_diffusers.py"
WORK = ("load", "step", "decode", "train")
LATENT_SIZE = 64  # 512x512 images


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


def peak_rss_mb() -> float:
    """VmHWM, this process's own high-water mark: getrusage's ru_maxrss carries the parent's RSS over a
    fork + exec, so a worker started by a big parent would report the parent's size."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024


def make_weights(cache: Path) -> None:
    """Random SD2-inpainting + ControlNet weights as a diffusers folder, and the inputs every run reads."""
    torch.manual_seed(0)
    save_checkpoint(build_models(SD2_INPAINT), cache / "sd2", "diffusers")
    generator = torch.Generator().manual_seed(0)
    size, factor = LATENT_SIZE, SD2_INPAINT.vae.downsample_factor
    save_state_dict({"latent_input": torch.randn(2, 9, size, size, generator=generator),
                     "timesteps": torch.tensor([500, 500]),
                     "context": torch.randn(2, 77, SD2_INPAINT.text.width, generator=generator),
                     "control_image": torch.rand(2, 3, size * factor, size * factor, generator=generator),
                     "latents": torch.randn(1, 4, size, size, generator=generator)}, cache / "inputs.safetensors")


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def run_work(item: str, cache: Path, dtype_name: str, steps: int, compile: bool) -> dict:
    """One work item in this process; returns its seconds."""
    dtype = DTYPES[dtype_name]
    if item == "train":
        with tempfile.TemporaryDirectory() as out_dir:
            config = TrainConfig(preset="sd2-inpaint", init=(str(cache / "sd2"),), data=("toy:4",), resolution=64,
                                 batch_size=1, frozen_dtype=dtype_name, compile=compile, out_dir=out_dir)
            # captions_kept=0: each step encodes its caption, as with a real dataset's (and diffusers')
            return {"work_s": benchmark(config, steps, captions_kept=0)["seconds_per_step"]}
    inputs = {key: value.to(dtype) if value.is_floating_point() else value
              for key, value in read_state_dict(cache / "inputs.safetensors").items()}
    figures = {}
    if item == "decode":
        models = empty_models(SD2_INPAINT, with_controlnet=False, dtype=dtype)
        figures["load_s"] = timed(lambda: load_checkpoint(cache / "sd2" / "vae", models))
        with torch.no_grad():
            figures["work_s"] = timed(lambda: models.vae.decode(inputs["latents"]))
        return figures
    models = None

    def load():
        nonlocal models
        models = load_models(cache / "sd2", preset="sd2-inpaint", dtype=dtype)

    figures["load_s"] = timed(load)
    if item == "step":
        if compile:
            compile_models(models)
        args = inputs["latent_input"], inputs["timesteps"], inputs["context"]

        def step():
            residuals = models.controlnet(*args, inputs["control_image"])
            models.unet(*args, residuals)

        with torch.no_grad():
            figures["first_step_s"] = timed(step)  # includes the compilation with --compile
            figures["work_s"] = statistics.median(timed(step) for _ in range(steps))
    return figures


def worker(args) -> None:
    baseline = rss_mb()
    figures = run_work(args.worker, Path(args.cache), args.worker_dtype, args.steps, args.compile)
    print(json.dumps({**figures, "baseline_mb": baseline, "peak_mb": peak_rss_mb()}))


def run_process(command: list[str]) -> dict:
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPOSITORY)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def variants(args, item: str, dtype: str) -> dict[str, list[str]]:
    """The commands to compare for one item, ours first."""
    ours = [sys.executable, "-m", "salient_outpaint.benchmark", "--cache", args.cache, "--steps", str(args.steps),
            "--worker", item, "--worker-dtype", dtype]
    commands = {"ours": ours}
    if args.compile and item in ("step", "train"):
        commands["ours --compile"] = ours + ["--compile"]
    if args.diffusers_python:
        commands["diffusers"] = [args.diffusers_python, str(DIFFUSERS_WORKER), item, dtype, args.cache,
                                 str(args.steps)]
    return commands


def ratio(ours: dict, theirs: dict, key: str) -> float | None:
    return ours[key] / theirs[key] if key in ours and key in theirs else None


def compare(args) -> list[dict]:
    rows = []
    for item in args.work:
        for dtype in args.dtypes:
            commands = variants(args, item, dtype)
            for pair in range(args.pairs):
                results = {}
                for name, command in commands.items():
                    load_average = os.getloadavg()[0]
                    results[name] = {**run_process(command), "load_average": load_average}
                for name, figures in results.items():
                    row = {"item": item, "dtype": dtype, "variant": name, "pair": pair + 1, **figures}
                    reference = results.get("diffusers") if name != "diffusers" else None
                    reference = reference or (results["ours"] if name == "ours --compile" else None)
                    if reference is not None:
                        row["vs"] = "diffusers" if "diffusers" in results else "ours"
                        row["time_ratio"] = ratio(figures, reference, "work_s")
                        row["load_ratio"] = ratio(figures, reference, "load_s")
                        row["peak_ratio"] = ratio(figures, reference, "peak_mb")
                    rows.append(row)
                    print(format_row(row), flush=True)
    return rows


def format_number(value, digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def format_row(row: dict) -> str:
    cells = [row["item"], row["dtype"], row["variant"], str(row["pair"]), format_number(row.get("load_s")),
             format_number(row.get("work_s")), format_number(row["peak_mb"] / 1024),
             format_number((row["peak_mb"] - row["baseline_mb"]) / 1024),
             " / ".join(format_number(row.get(key)) for key in ("load_ratio", "time_ratio", "peak_ratio"))
             if "vs" in row else "", row.get("vs", ""), format_number(row["load_average"], 1)]
    return "| " + " | ".join(cells) + " |"


HEADER = ("| item | dtype | variant | pair | load s | work s | peak GiB | above imports GiB "
          "| ratio load / work / peak | vs | load avg |\n|" + " --- |" * 11)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", default="runs/bench", help="where the random weights are kept (default: runs/bench)")
    parser.add_argument("--work", nargs="+", choices=WORK, default=["load", "step", "decode"],
                        help="work items (default: load step decode)")
    parser.add_argument("--dtypes", nargs="+", choices=["fp32", "bf16", "fp16"], default=["fp32"],
                        help="(default: fp32)")
    parser.add_argument("--pairs", type=int, default=2, help="alternated runs per variant (default: 2)")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per run (default: 2)")
    parser.add_argument("--compile", action="store_true", help="also time our step with torch.compile")
    parser.add_argument("--diffusers-python", help="a python with diffusers and transformers: run the same work "
                                                   "there (default: none)")
    parser.add_argument("--worker", choices=WORK, help=argparse.SUPPRESS)  # one work item in this process
    parser.add_argument("--worker-dtype", default="fp32", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    if args.diffusers_python and not DIFFUSERS_WORKER.is_file():
        print(f"error: {DIFFUSERS_WORKER} is missing (it ships with the repository, not the package)", file=sys.stderr)
        return 2
    cache = Path(args.cache)
    if not (cache / "inputs.safetensors").is_file():
        print(f"writing random SD2 weights to {cache / 'sd2'} (once)", flush=True)
        make_weights(cache)
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; GiB = peak RSS", flush=True)
    print(HEADER, flush=True)
    rows = compare(args)
    results = cache / "results.jsonl"
    with open(results, "a") as log:
        for row in rows:
            log.write(json.dumps(row) + "\n")
    print(f"appended {len(rows)} rows to {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
