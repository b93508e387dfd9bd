"""Toy-world measurements of --hires at 4x the working size (issue 23), and the README's 100% crop.

    python docs/measure_hires.py --scenes 40 --scene-seed 0 --weights weights/toy_zoom --out runs/hires_toy

Held-out scenes drawn at 256 px (4x the toy model's 64), each painted from the same seed three ways:
the working-size result (`--raw`), the default full-size path (bicubic upscale + composite) and
`--hires` (hires_size 256, --strength, --passes); sampling options are sample.py's defaults unless given.
`--weights`: the shipped toy model (default) or weights/toy_zoom, the same fine-tuned on close-ups too
(docs/toy_world.md). The targets, fixed before the run (issue 23), and how each is aggregated over the scenes:

  detail     background gradient energy (mean squared difference of neighbouring pixels, in [0, 1] units,
             outside the object dilated by 4 px). Over the scenes: the ratio of mean energies, --hires /
             bicubic (target >= 1.5) and --hires / the prompted background drawn at 256 px (target 0.7-1.3),
             each with a paired 95% bootstrap interval (evaluation/bootstrap.py: 10,000 resamples, seed 0).
  layout     --hires resized to the working size (bicubic) vs the working-size result, mean |difference| in
             [0, 1] (target <= 0.04); the bicubic path's own figure beside it.
  expansion  each full-size result segmented at 256 px by the toy world's colour segmenter prompted with the
             mask; expansion ratio per scene. --hires vs bicubic: the means and the paired interval of
             their ratio (target: no larger, i.e. the ratio at most 1 or its interval holding 1).

Writes OUT/hires.json (per scene and aggregated), prints a table per background kind, and with --crop
docs/images/hires_crop.png: a 96 px crop at 100% zoom of the first scene, bicubic | --hires.

    python docs/measure_hires.py --scenes 40 --native [--weights ...]

The calibration of the detail target: the same scenes drawn at the working size (64 px), the model's own
working-size result against the prompted background drawn at 64 px (outside the object dilated by 1 px):
how much of a drawn background's gradient energy the model renders at its own size.

    python docs/measure_hires.py --vae [--weights ...]

The VAE's ceiling: how much of each drawn background's gradient energy its encode + decode keeps, for 4
drawings of each kind and, over the held-out scenes, in the detail target's own terms (ratio of mean
energies outside the dilated object, paired interval): what a perfect U-Net could reach.

    python docs/measure_hires.py --denoiser 0.05 0.4 0.7 [--scenes ...] [--weights ...]

The U-Net's share: each held-out scene drawn at 256 px (its true detail) re-noised to each strength and
repainted by the tiles (hires.repaint, no layout step); how much of the drawn energy survives.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from salient_outpaint.data.images import make_grid, save_image  # noqa: E402
from salient_outpaint.data.masks import dilate  # noqa: E402
from salient_outpaint.data.synthetic import BACKGROUNDS, draw_background, render_scene, scene_generator  # noqa: E402
from salient_outpaint.evaluation.bootstrap import mean_interval, ratio_interval  # noqa: E402
from salient_outpaint.evaluation.expansion import object_expansion  # noqa: E402
from salient_outpaint.hires import PROMPT, HiresOptions, repaint  # noqa: E402
from salient_outpaint.loading import load_models  # noqa: E402
from salient_outpaint.options import SamplingOptions  # noqa: E402
from salient_outpaint.photo import outpaint_photo, resize  # noqa: E402
from salient_outpaint.pipeline import OutpaintPipeline  # noqa: E402
from salient_outpaint.segmentation import SegmentPrompt  # noqa: E402
from salient_outpaint.segmentation.colour import ColourSegmenter  # noqa: E402

SIZE = 256


def gradient_energy(image: torch.Tensor, region: torch.Tensor) -> float:
    rows = (image[:, 1:, :] - image[:, :-1, :]) ** 2
    columns = (image[:, :, 1:] - image[:, :, :-1]) ** 2
    return float((rows.mean(0)[region[1:, :] & region[:-1, :]].mean() +
                  columns.mean(0)[region[:, 1:] & region[:, :-1]].mean()) / 4)  # images in [-1, 1] -> [0, 1]


def drawing(name: str, size: int, seed: int) -> torch.Tensor:
    """The background `name` as drawn for a prompt, (3, size, size) in [-1, 1]."""
    return draw_background(name, size, torch.Generator().manual_seed(seed)).clamp(0, 1) * 2 - 1


def drawn_scene(scene_seed: int, index: int, size: int = SIZE, dilation: int = 4
                ) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """A held-out scene at `size`, its prompted background drawn at `size` in [-1, 1], and the detail
    target's region (outside the object dilated by `dilation` px)."""
    scene = render_scene(size, scene_generator(scene_seed, "test", 0, index))
    return scene, drawing(scene["background"], size, index), ~dilate(scene["mask"], dilation)[0].bool()


def detail_ratio(numerator: list[float], denominator: list[float], kinds: list[str], digits: int = 2) -> str:
    """'ratio [low, high]; by kind: ...': the ratio of mean energies with its paired interval, then per kind."""
    def kind_ratio(kind):
        return (sum(n for n, k in zip(numerator, kinds) if k == kind)
                / sum(d for d, k in zip(denominator, kinds) if k == kind))

    return ("{:.2f} [{:.2f}, {:.2f}]; by kind: ".format(*ratio_interval(numerator, denominator))
            + ", ".join(f"{kind} {kind_ratio(kind):.{digits}f}" for kind in sorted(set(kinds))))


def measure_scene(pipeline, options: SamplingOptions, hires: HiresOptions, scene_seed: int, index: int,
                  segmenter: ColourSegmenter) -> tuple[dict, list[torch.Tensor]]:
    scene, drawn, region = drawn_scene(scene_seed, index)
    image, mask = scene["image"], scene["mask"]

    def paint(hires_options=None, raw=False):
        return outpaint_photo(pipeline, image, mask, scene["caption"], options=options, raw=raw,
                              generator=torch.Generator().manual_seed(index), hires=hires_options)[0]

    working, bicubic, refined = paint(raw=True), paint(), paint(hires)
    kept = mask[0].bool()

    def expansion(picture):
        return object_expansion(kept, segmenter(picture, SegmentPrompt(mask=mask))[0].bool()).expansion_ratio

    def layout(picture):
        return float((resize(picture, working.shape[-2:], "bicubic").clamp(-1, 1) - working).abs().mean() / 2)

    row = {"index": index, "background": scene["background"], "caption": scene["caption"],
           "energy_bicubic": gradient_energy(bicubic, region), "energy_hires": gradient_energy(refined, region),
           "energy_drawn": gradient_energy(drawn, region), "layout_hires": layout(refined),
           "layout_bicubic": layout(bicubic), "expansion_hires": expansion(refined),
           "expansion_bicubic": expansion(bicubic)}
    return row, [bicubic, refined]


def paired_ratio(numerator: list[float], denominator: list[float]) -> tuple[float, float, float] | None:
    return ratio_interval(numerator, denominator) if statistics.fmean(denominator) > 0 else None


def summary(rows: list[dict]) -> dict:
    column = {key: [row[key] for row in rows] for key in rows[0] if key.startswith(("energy", "layout", "expansion"))}
    return {"scenes": len(rows),
            "detail_vs_bicubic": ratio_interval(column["energy_hires"], column["energy_bicubic"]),
            "detail_vs_drawn": ratio_interval(column["energy_hires"], column["energy_drawn"]),
            "layout_hires": mean_interval(column["layout_hires"]),
            "layout_bicubic": mean_interval(column["layout_bicubic"]),
            "expansion_hires": mean_interval(column["expansion_hires"]),
            "expansion_bicubic": mean_interval(column["expansion_bicubic"]),
            "expansion_hires_vs_bicubic": paired_ratio(column["expansion_hires"], column["expansion_bicubic"])}


def native_detail(pipeline, options: SamplingOptions, scene_seed: int, scenes: int) -> None:
    working, drawn, kinds = [], [], []
    for index in range(scenes):
        scene, background, region = drawn_scene(scene_seed, index, size=64, dilation=1)
        result = outpaint_photo(pipeline, scene["image"], scene["mask"], scene["caption"], options=options, raw=True,
                                generator=torch.Generator().manual_seed(index))[0]
        working.append(gradient_energy(result, region))
        drawn.append(gradient_energy(background, region))
        kinds.append(scene["background"])
    print("the model at its own size / drawn at 64 px: " + detail_ratio(working, drawn, kinds, digits=3))


def round_trip(vae, images: torch.Tensor) -> torch.Tensor:
    """images (N, 3, H, W) in [-1, 1] through the VAE's encode (posterior mean) and decode, clamped to [-1, 1]."""
    return vae.decode(vae.encode(images).mean).float().clamp(-1, 1)


def vae_detail(vae, scene_seed: int, scenes: int) -> None:
    """How much of each drawn background's gradient energy the VAE's encode + decode keeps, at 64 and 256 px
    (the ceiling of what any sampling in its latents can draw): 4 drawings of each kind, ratio of sums; then
    over the held-out scenes at 256 px, as the detail target is aggregated."""
    for size in (64, SIZE):
        kept = {}
        for name in BACKGROUNDS:
            drawn = [drawing(name, size, seed) for seed in range(4)]
            decoded = round_trip(vae, torch.stack(drawn))
            everywhere = torch.ones(size, size, dtype=torch.bool)
            kept[name] = (sum(gradient_energy(picture, everywhere) for picture in decoded)
                          / sum(gradient_energy(picture, everywhere) for picture in drawn))
        print(f"VAE at {size} px keeps: " + ", ".join(f"{name} {ratio:.2f}" for name, ratio in kept.items()))
    decoded, drawn = [], []
    for index in range(scenes):
        scene, background, region = drawn_scene(scene_seed, index)
        drawn.append(gradient_energy(background, region))
        decoded.append(gradient_energy(round_trip(vae, background[None])[0], region))
    print(f"VAE ceiling of detail / drawn over {scenes} scenes (seed {scene_seed}): "
          + "{:.2f} [{:.2f}, {:.2f}]".format(*ratio_interval(decoded, drawn)))


def denoiser_detail(pipeline, options: SamplingOptions, scene_seed: int, scenes: int,
                    strengths: list[float]) -> None:
    """The tiles given the true detail: each scene drawn at 256 px, re-noised to `strength` and repainted."""
    drawings = [drawn_scene(scene_seed, index) for index in range(scenes)]
    drawn = [gradient_energy(background, region) for _, background, region in drawings]
    kinds = [scene["background"] for scene, _, _ in drawings]
    for strength in strengths:
        kept = [gradient_energy(repaint(pipeline, scene["image"][None], scene["image"], scene["mask"],
                                        scene["caption"], "", options, strength,
                                        torch.Generator().manual_seed(index))[0], region)
                for index, (scene, _, region) in enumerate(drawings)]
        print(f"strength {strength:g}: repainted / drawn " + detail_ratio(kept, drawn, kinds), flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=40)
    parser.add_argument("--scene-seed", type=int, default=0, help="which held-out scenes (default: 0)")
    parser.add_argument("--steps", type=int, default=SamplingOptions().steps)
    parser.add_argument("--guidance", type=float, default=SamplingOptions().guidance)
    parser.add_argument("--strength", type=float, default=HiresOptions().hires_strength)
    parser.add_argument("--passes", type=int, default=HiresOptions().hires_passes,
                        help="enlargements from 64 to 256 px (2: 128, then 256)")
    parser.add_argument("--hires-prompt", default=HiresOptions().hires_prompt,
                        help=f"what the tiles are told ({PROMPT}: the scene's caption), e.g. 'a close-up of "
                             f"{PROMPT}' for a model trained with its close-ups captioned so (docs/toy_world.md)")
    parser.add_argument("--out", default="runs/hires_toy")
    parser.add_argument("--weights", default=None,
                        help="a toy-preset weights folder (default: weights/toy, trained on whole scenes; "
                             "weights/toy_zoom also saw the close-ups --hires's tiles see)")
    parser.add_argument("--crop", action="store_true", help="write docs/images/hires_crop.png")
    parser.add_argument("--native", action="store_true", help="only the calibration at the working size")
    parser.add_argument("--vae", action="store_true", help="only the VAE's share of the drawn detail")
    parser.add_argument("--denoiser", type=float, nargs="+", metavar="STRENGTH",
                        help="only the tiles' share: the drawn scenes re-noised to each strength and repainted")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    pipeline = OutpaintPipeline(load_models(args.weights, preset="toy"))
    options = SamplingOptions(steps=args.steps, guidance=args.guidance)
    if args.vae:
        with torch.no_grad():
            vae_detail(pipeline.models.vae, args.scene_seed, args.scenes)
        return 0
    if args.denoiser:
        denoiser_detail(pipeline, options, args.scene_seed, args.scenes, args.denoiser)
        return 0
    if args.native:
        native_detail(pipeline, options, args.scene_seed, args.scenes)
        return 0
    hires = HiresOptions(hires_size=SIZE, hires_strength=args.strength, hires_passes=args.passes,
                         hires_prompt=args.hires_prompt)
    segmenter, rows = ColourSegmenter(), []
    for index in range(args.scenes):
        row, pictures = measure_scene(pipeline, options, hires, args.scene_seed, index, segmenter)
        rows.append(row)
        print(json.dumps(row), flush=True)
        if index == 0 and args.crop:
            crop = (slice(None), slice(80, 176), slice(0, 96))
            save_image(make_grid([F.pad(picture[crop], (2, 2, 2, 2), value=1.0) for picture in pictures], columns=2),
                       Path(__file__).parent / "images" / "hires_crop.png")
    result = {"options": vars(args), "summary": summary(rows),
              "by_background": {kind: summary([row for row in rows if row["background"] == kind])
                                for kind in sorted({row["background"] for row in rows})},
              "rows": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "hires.json").write_text(json.dumps(result, indent=1))
    print("| scenes | detail / bicubic [95% CI] | detail / drawn [95% CI] | layout MAD hires (bicubic) | "
          "expansion hires vs bicubic [95% CI] |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, part in [("all", result["summary"]), *result["by_background"].items()]:
        detail, drawn, expansion = part["detail_vs_bicubic"], part["detail_vs_drawn"], part["expansion_hires_vs_bicubic"]
        print(f"| {name} ({part['scenes']}) | {detail[0]:.2f} [{detail[1]:.2f}, {detail[2]:.2f}] | "
              f"{drawn[0]:.2f} [{drawn[1]:.2f}, {drawn[2]:.2f}] | {part['layout_hires'][0]:.4f} "
              f"({part['layout_bicubic'][0]:.4f}) | {part['expansion_hires'][0]:.4f} vs {part['expansion_bicubic'][0]:.4f}"
              + (f": {expansion[0]:.2f} [{expansion[1]:.2f}, {expansion[2]:.2f}] |" if expansion else " |"), flush=True)
    print("median scene, detail / drawn:", statistics.median(row["energy_hires"] / row["energy_drawn"] for row in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
