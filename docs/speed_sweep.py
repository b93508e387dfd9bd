"""The speed sweep of docs/experiments.md ("Speed"): sampling settings on the toy model, each with its
FLOPs per 512 x 512 SD2 image relative to `authors`, the toy metrics with 95% bootstrap intervals over
the scenes, and fidelity: background PSNR against UniPC at 50 steps (authors' guidance and scale) on
the same noise.

    python docs/speed_sweep.py --toy 50 --scene-seed 0 --out runs/speed_tune            # tune: the grid
    python docs/speed_sweep.py --toy 50 --scene-seed 1 --out runs/speed_judge --settings authors fast

Writes OUT/sweep.json and OUT/sweep.md. The grid is GRID below, listed before it was run.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import asdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from salient_outpaint.config import PRESETS  # noqa: E402
from salient_outpaint.data.manifest import read_manifest  # noqa: E402
from salient_outpaint.evaluation import run  # noqa: E402
from salient_outpaint.evaluation.bootstrap import mean_interval, per_input_means, ratio_interval  # noqa: E402
from salient_outpaint.evaluation.fidelity import background_psnr  # noqa: E402
from salient_outpaint.flops import image_flops  # noqa: E402
from salient_outpaint.loading import load_models  # noqa: E402
from salient_outpaint.modules.models import empty_models  # noqa: E402
from salient_outpaint.options import SAMPLING_PRESETS, SamplingOptions  # noqa: E402
from salient_outpaint.pipeline import OutpaintPipeline  # noqa: E402
from salient_outpaint.segmentation.colour import ColourSegmenter  # noqa: E402

AUTHORS = SAMPLING_PRESETS["authors"]
UNIPC = dict(sampler="unipc", guidance=AUTHORS.guidance, control_scale=AUTHORS.control_scale)
REFERENCE = SamplingOptions(steps=50, **UNIPC)
GRID = {  # listed before the 50-scene run: every row but "10 steps" meets FLOPs <= 0.30 x authors
    "authors": AUTHORS,
    "10 steps": SamplingOptions(steps=10, **UNIPC),
    "10, cache 3, reuse guidance, guidance to 0.9": SamplingOptions(steps=10, cache_interval=3, reuse_guidance=True,
                                                                    guidance_end=0.9, **UNIPC),
    "10, cache 3, reuse guidance, guidance to 0.8": SamplingOptions(steps=10, cache_interval=3, reuse_guidance=True,
                                                                    guidance_end=0.8, **UNIPC),
    "10, cache 4, reuse guidance": SamplingOptions(steps=10, cache_interval=4, reuse_guidance=True, **UNIPC),
    "11, cache 4, reuse guidance": SamplingOptions(steps=11, cache_interval=4, reuse_guidance=True, **UNIPC),
    "11, cache 4, reuse guidance, guidance to 0.9": SamplingOptions(steps=11, cache_interval=4, reuse_guidance=True,
                                                                    guidance_end=0.9, **UNIPC),
    "12, cache 4, reuse guidance": SamplingOptions(steps=12, cache_interval=4, reuse_guidance=True, **UNIPC),
    "12, cache 5, reuse guidance": SamplingOptions(steps=12, cache_interval=5, reuse_guidance=True, **UNIPC),
    "10, cache 2, reuse guidance, guidance to 0.3": SamplingOptions(steps=10, cache_interval=2, reuse_guidance=True,
                                                                    guidance_end=0.3, **UNIPC),
}
FAST_BASE = dict(steps=10, cache_interval=3, reuse_guidance=True, guidance_end=0.9, sampler="unipc")
GRID_ROUND_2 = {  # listed after round 1 (no setting within 3 points of authors' background), before running
    "10, cache 3, reuse guidance, guidance to 0.9, guidance 9": SamplingOptions(guidance=9.0, control_scale=1.0,
                                                                                **FAST_BASE),
    "10, cache 3, reuse guidance, guidance to 0.9, guidance 6": SamplingOptions(guidance=6.0, control_scale=1.0,
                                                                                **FAST_BASE),
    "10, cache 3, reuse guidance, guidance to 0.9, control to 0.8": SamplingOptions(
        guidance=AUTHORS.guidance, control_scale=1.0, control_end=0.8, **FAST_BASE),
    "10, cache 3, reuse guidance, guidance to 0.9, guidance 9, control to 0.8": SamplingOptions(
        guidance=9.0, control_scale=1.0, control_end=0.8, **FAST_BASE),
}


def settings(names: list[str]) -> dict[str, SamplingOptions]:
    known = {**GRID, **GRID_ROUND_2, **{name: options for name, options in SAMPLING_PRESETS.items()}}
    return {name: known[name] for name in names}


def generate_once(pipeline, inputs, folder: Path, num_images: int, options: SamplingOptions) -> None:
    """The images of a setting, unless a run of this sweep made them already with these options."""
    run.generate(pipeline, inputs, folder, num_images, options, seed=0,
                 settings={"sweep": "toy", "sampling": asdict(options)})


def fidelity(folder: Path, reference: Path, inputs) -> dict[str, float]:
    """Input id -> mean background PSNR of its samples against the reference's on the same noise."""
    result = {}
    for item in inputs:
        object_mask = run.object_mask_of(item)
        samples = run.load_samples(folder, item)
        references = run.load_samples(reference, item)
        result[item.id] = statistics.fmean(background_psnr(image, expected, object_mask)
                                           for image, expected in zip(samples, references))
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--toy", type=int, default=50, help="held-out toy scenes (default: 50)")
    parser.add_argument("--scene-seed", type=int, default=0, help="which toy scenes (default: 0)")
    parser.add_argument("--num-images", type=int, default=2, help="samples per scene (default: 2)")
    parser.add_argument("--settings", nargs="+", default=list(GRID), help="names from GRID or presets")
    parser.add_argument("--out", default="runs/speed_sweep")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    inputs = read_manifest(run.write_toy_manifest(out / "inputs", args.toy, seed=args.scene_seed))
    pipeline = OutpaintPipeline(load_models())
    sd2 = empty_models(PRESETS["sd2-inpaint"])
    chosen = settings(args.settings)
    reference_folder = out / "unipc-50"
    generate_once(pipeline, inputs, reference_folder, args.num_images, REFERENCE)
    segmenter, records, psnr, flops = ColourSegmenter(), [], {}, {}
    for name, options in chosen.items():
        folder = out / name.replace(" ", "_").replace(",", "")
        generate_once(pipeline, inputs, folder, args.num_images, options)
        records += run.image_records(name, folder, inputs, segmenter)
        psnr[name] = fidelity(folder, reference_folder, inputs)
        flops[name] = image_flops(sd2, options)["total"] if options != AUTHORS else None
        print(name, "generated and measured", flush=True)
    authors_flops = image_flops(sd2, AUTHORS)["total"]
    flops = {name: authors_flops if value is None else value for name, value in flops.items()}
    expansion, match = per_input_means(records, "expansion_ratio"), per_input_means(records, "background_match")
    diversity = per_input_means(records, "background_diversity")
    rows, lines = {}, ["| setting | FLOPs / authors | expansion mean [95% CI] | median | ratio to authors "
                       "[paired 95% CI] | background as prompted | diversity | fidelity: background PSNR (dB) |",
                       "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, options in chosen.items():
        ids = list(expansion[name])
        row = {"options": asdict(options),
               "flops_ratio": flops[name] / authors_flops,
               "expansion": mean_interval([expansion[name][i] for i in ids]),
               "expansion_median": statistics.median(r["expansion_ratio"] for r in records if r["method"] == name),
               "background_match": statistics.fmean(match[name].values()),
               "diversity": statistics.fmean(diversity[name].values()) if name in diversity else None,
               "fidelity_psnr": statistics.fmean(psnr[name].values())}
        if "authors" in expansion and name != "authors":
            row["ratio_to_authors"] = ratio_interval([expansion[name][i] for i in ids],
                                                     [expansion["authors"][i] for i in ids])
        rows[name] = row
        ratio = row.get("ratio_to_authors")
        lines.append(f"| {name} | {row['flops_ratio']:.3f} | {row['expansion'][0]:.4f} [{row['expansion'][1]:.4f}, "
                     f"{row['expansion'][2]:.4f}] | {row['expansion_median']:.4f} | "
                     + (f"{ratio[0]:.3f} [{ratio[1]:.3f}, {ratio[2]:.3f}]" if ratio else "–")
                     + f" | {100 * row['background_match']:.1f}% | "
                     + (f"{row['diversity']:.4f}" if row["diversity"] is not None else "–")
                     + f" | {row['fidelity_psnr']:.2f} |")
    table = "\n".join(lines)
    (out / "sweep.json").write_text(json.dumps({"scenes": args.toy, "scene_seed": args.scene_seed,
                                                "num_images": args.num_images, "rows": rows}, indent=1, default=str))
    (out / "sweep.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
