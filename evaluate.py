"""Measure object expansion (and FID, LPIPS diversity, CLIP score, object similarity) of generated backgrounds.

  # the toy world: generate for 50 held-out scenes with and without the ControlNet, then measure
  python evaluate.py --generate --toy 50 --out runs/eval_toy
  # your own inputs (manifest: JSONL with id, image, mask, prompt[, category]) and images made elsewhere
  python evaluate.py --inputs manifest.jsonl --generated ours=out/ours si2=out/si2 --segmenter sam \\
      --sam-checkpoint weights/sam_vit_h_4b8939.pth --sam-type vit_h --out runs/eval
  # or generate them here with SD2-inpainting + a ControlNet, both methods on the same noise
  python evaluate.py --inputs manifest.jsonl --generate --checkpoint weights/stable-diffusion-2-inpainting \\
      --controlnet weights/photo-background-generation/controlnet --segmenter sam --sam-checkpoint ... --out runs/eval

Generated images are named <id>_<k>.png. Writes OUT/report.json (every image's record and the summary per
method and category) and OUT/report.md. Metrics whose weights are not given are skipped, with a note.
See docs/evaluation.md.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent
METHODS = {"controlnet": 1.0, "no-controlnet": 0.0}  # method -> ControlNet conditioning scale


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_argument_group("inputs and images")
    source.add_argument("--inputs", help="manifest JSONL: one {id, image, mask, prompt, category} per line")
    source.add_argument("--toy", type=int, metavar="N", help="use N held-out toy-world scenes as the inputs")
    source.add_argument("--generated", nargs="+", default=[], metavar="METHOD=DIR",
                        help="folders of generated images, one per method")
    source.add_argument("--generate", action="store_true",
                        help="generate the images here, with and without the ControlNet (see --methods)")
    source.add_argument("--out", default="runs/evaluation", help="report folder (default: runs/evaluation)")
    generation = parser.add_argument_group("generation (with --generate)")
    generation.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=list(METHODS))
    generation.add_argument("--checkpoint", help="SI2 weights (default: the shipped toy model, weights/toy)")
    generation.add_argument("--controlnet", help="ControlNet weights (default: the one in --checkpoint)")
    generation.add_argument("--preset", help="architecture (default: toy without --checkpoint, else sd2-inpaint)")
    generation.add_argument("--num-images", type=int, default=4, help="samples per input (default: 4)")
    generation.add_argument("--steps", type=int, default=20)
    generation.add_argument("--guidance", type=float, default=5.0)
    generation.add_argument("--sampler", default="dpm++2m")
    generation.add_argument("--seed", type=int, default=0)
    generation.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    metrics = parser.add_argument_group("metrics")
    metrics.add_argument("--segmenter", choices=["colour", "sam"], default="colour",
                         help="how the object is found in generated images: colour (toy world) or sam")
    metrics.add_argument("--sam-checkpoint", help="a segment-anything checkpoint file")
    metrics.add_argument("--sam-type", choices=["vit_b", "vit_l", "vit_h"], default="vit_h")
    metrics.add_argument("--fid-weights", help="pytorch-fid's pt_inception-2015-12-05 weights: enables FID")
    metrics.add_argument("--real", help="folder of real images for FID (default: the input images)")
    metrics.add_argument("--lpips-backbone", choices=["alex", "vgg"], default="alex")
    metrics.add_argument("--lpips-weights", nargs=2, metavar=("BACKBONE", "LINEAR"),
                         help="torchvision backbone + lpips linear-layer weights: enables LPIPS diversity")
    metrics.add_argument("--clip-checkpoint", help="open_clip weights: enables CLIP score and object similarity")
    metrics.add_argument("--clip-model", default="ViT-H-14", help="open_clip architecture (default: ViT-H-14)")
    return parser.parse_args(argv)


def method_folders(args, inputs, out: Path) -> dict[str, Path]:
    folders = {}
    for spec in args.generated:
        method, separator, folder = spec.rpartition("=")
        folders[method if separator else Path(folder).name] = Path(folder)
    for method, folder in folders.items():
        if not folder.is_dir():
            raise FileNotFoundError(f"the folder of {method}'s images, {folder}, does not exist")
    if args.generate:
        folders.update(generate_methods(args, inputs, out))
    if not folders:
        raise ValueError("nothing to evaluate: give --generated METHOD=DIR or --generate")
    return folders


def generate_methods(args, inputs, out: Path) -> dict[str, Path]:
    from salient_outpaint.pipeline import OutpaintPipeline, SamplingOptions
    from salient_outpaint.evaluation.run import generate
    from sample import load_models

    models = load_models(argparse.Namespace(checkpoint=args.checkpoint, controlnet=args.controlnet,
                                            preset=args.preset, no_controlnet=False))
    pipeline = OutpaintPipeline(models, args.device)
    folders = {}
    for method in args.methods:
        options = SamplingOptions(steps=args.steps, guidance=args.guidance, sampler=args.sampler,
                                  control_scale=METHODS[method])
        folders[method] = out / "images" / method
        generate(pipeline, inputs, folders[method], args.num_images, options, args.seed)
    return folders


def set_metrics(args, inputs, folders) -> dict[str, dict[str, float]]:
    """FID and LPIPS diversity: one number per method."""
    from salient_outpaint.evaluation.run import load_samples

    results = {method: {} for method in folders}
    if args.fid_weights:
        from salient_outpaint.data.images import load_image
        from salient_outpaint.evaluation.fid import extract_features, fid_from_features
        from salient_outpaint.evaluation.fid_inception import load_fid_inception

        inception = load_fid_inception(args.fid_weights, args.device)
        real_paths = sorted(Path(args.real).glob("*.png")) if args.real else [item.image for item in inputs]
        real = extract_features(([load_image(path)[None]] for path in real_paths), inception, args.device)
        for method, folder in folders.items():
            batches = (load_samples(folder, item) for item in inputs)
            results[method]["fid"] = fid_from_features(real, extract_features(batches, inception, args.device))
    if args.lpips_weights:
        from salient_outpaint.evaluation.lpips import load_lpips, pairwise_diversity

        lpips = load_lpips(args.lpips_backbone, *args.lpips_weights, device=args.device)
        for method, folder in folders.items():
            scores = [pairwise_diversity(lpips, load_samples(folder, item).to(args.device)) for item in inputs]
            results[method]["lpips_diversity"] = sum(scores) / len(scores)
    return results


def add_clip_metrics(args, records, inputs) -> None:
    from salient_outpaint.data.images import load_image, load_mask
    from salient_outpaint.evaluation.clip_score import clip_score, load_clip_embedder, object_similarity

    embedder = load_clip_embedder(args.clip_model, args.clip_checkpoint, args.device)
    by_id = {item.id: item for item in inputs}
    for record in records:
        item = by_id[record["id"]]
        generated, original = load_image(record["file"])[None], load_image(item.image)[None]
        record["clip_score"] = float(clip_score(embedder, generated, [item.prompt])[0])
        record["object_similarity"] = float(object_similarity(embedder, original, generated,
                                                              load_mask(item.mask) >= 0.5)[0])


def evaluate(args) -> dict:
    from salient_outpaint.evaluation.report import markdown_category_table, markdown_table, summarise
    from salient_outpaint.evaluation.run import measure_method, read_manifest, write_toy_manifest
    from salient_outpaint.evaluation.segmenters import ColourSegmenter, SAMSegmenter

    out = Path(args.out)
    if bool(args.inputs) == bool(args.toy):
        raise ValueError("give the inputs either as --inputs MANIFEST or as --toy N")
    manifest = Path(args.inputs) if args.inputs else write_toy_manifest(out / "inputs", args.toy)
    inputs = read_manifest(manifest)
    if args.segmenter == "sam":
        if not args.sam_checkpoint:
            raise ValueError("--segmenter sam needs --sam-checkpoint (a segment-anything checkpoint file)")
        segmenter = SAMSegmenter.from_checkpoint(args.sam_checkpoint, args.sam_type, device=args.device)
    else:
        segmenter = ColourSegmenter()
    folders = method_folders(args, inputs, out)
    records = [record for method, folder in folders.items() for record in measure_method(method, folder, inputs,
                                                                                          segmenter)]
    notes = []
    if args.clip_checkpoint:
        add_clip_metrics(args, records, inputs)
    else:
        notes.append("CLIP score and object similarity skipped: give --clip-checkpoint")
    if not args.fid_weights:
        notes.append("FID skipped: give --fid-weights")
    if not args.lpips_weights:
        notes.append("LPIPS diversity skipped: give --lpips-weights")
    summary = summarise(records, set_metrics(args, inputs, folders))
    table = markdown_table(summary)
    category_table = markdown_category_table(summary, "expansion_ratio")
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps({"manifest": str(manifest), "summary": summary,
                                                 "records": records}, indent=1))
    (out / "report.md").write_text(f"# Evaluation\n\n{table}\n\n## Expansion ratio per category\n\n"
                                   f"{category_table}\n")
    for note in notes:
        print(f"note: {note}")
    print(table)
    print(f"wrote {out / 'report.json'} and {out / 'report.md'}")
    return summary


def main(argv=None) -> int:
    args = parse_args(argv)
    from salient_outpaint.checkpoints import CheckpointError

    try:
        evaluate(args)
    except (CheckpointError, FileNotFoundError, ValueError, KeyError, ImportError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
