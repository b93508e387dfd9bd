"""evaluate.py's procedure, in order: (generate,) segment, measure, report.

The command line parses its flags into the two records below and the sampling options of each method,
then calls `evaluate`; every check that can fail fast (a weights file missing) runs before the long work.
Under torchrun the processes share the generation (run.generate: each input made once, by one process,
with the noise it gets alone; a rerun makes only what is missing); rank 0 then measures alone.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .. import distributed
from ..data.manifest import ManifestInput, read_manifest
from ..distributed import Process, single_process
from ..files import atomic_write
from ..loading import TOY_WEIGHTS, load_models
from ..options import SamplingOptions
from ..output_settings import weights_fingerprint
from ..outputs import check_output_folder, check_spares_inputs
from ..pipeline import OutpaintPipeline
from ..precision import default_dtype
from ..segmentation import inspyrenet, make_segmenter, sam
from . import clip_score, fid_inception, lpips, run
from .bootstrap import RESAMPLES, intervals, markdown_intervals
from .report import summarise
from .self_check import input_self_check, markdown_self_check

# method -> ControlNet conditioning scale (the controlnet method's is --control-scale)
METHODS = {"controlnet": 1.0, "no-controlnet": 0.0}


@dataclass(frozen=True)
class Generation:
    """What --generate makes: num_images samples per input for each method, input i from seed + i."""
    options: Mapping[str, SamplingOptions]  # method -> how it samples
    checkpoint: str | None = None
    controlnet: str | None = None
    preset: str | None = None
    num_images: int = 4
    seed: int = 0
    dtype: str | None = None


@dataclass(frozen=True)
class Metrics:
    """How the object is found again, and the weights of the other metrics (None: skipped, with a note)."""
    segmenter: str
    mask_weights: str | None = None
    sam_type: str | None = None
    fid_weights: str | None = None
    real: str | None = None  # folder of real images for FID (None: the inputs)
    lpips_backbone: str = "alex"
    lpips_weights: tuple[str, str] | None = None  # (backbone, linear layers)
    clip_checkpoint: str | None = None
    clip_model: str = "ViT-H-14"


def check_metric_weights(metrics: Metrics) -> None:
    """Every weights file given, and SAM's, before hours of generation find one missing."""
    expected = {"sam": " or ".join(sam.SAM_CHECKPOINT_NAMES.values()), "inspyrenet": inspyrenet.CHECKPOINT_NAME}
    name = metrics.segmenter
    if name in expected and not metrics.mask_weights:
        raise ValueError(f"measuring expansion with {name} needs --mask-weights ({expected[name]}); "
                         "for toy-world images give --segmenter colour")
    if name in expected:
        run.check_weight_file(metrics.mask_weights, "--mask-weights", expected[name])
    if metrics.fid_weights:
        run.check_weight_file(metrics.fid_weights, "--fid-weights", fid_inception.FID_WEIGHTS_NAME)
    if metrics.lpips_weights:
        backbone, linear = metrics.lpips_weights
        run.check_weight_file(backbone, "--lpips-weights", lpips.BACKBONES[metrics.lpips_backbone].weights_name)
        run.check_weight_file(linear, "--lpips-weights", f"lpips' weights/v0.1/{metrics.lpips_backbone}.pth")
    if metrics.clip_checkpoint:
        run.check_weight_file(metrics.clip_checkpoint, "--clip-checkpoint",
                              f"open_clip weights for {metrics.clip_model}")


def generate_methods(generation: Generation, inputs: list[ManifestInput], out: Path, device: str | torch.device,
                     process: Process = single_process(), skipped: list[str] | None = None) -> dict[str, Path]:
    """Each method's images into OUT/<method>/, beside its settings record, this process's share of them
    (see run.generate); the networks are freed on return."""
    models = load_models(generation.checkpoint, generation.controlnet, generation.preset,
                         with_controlnet="controlnet" in generation.options, dtype=generation.dtype, device=device)
    pipeline = OutpaintPipeline(models, device)
    weights = distributed.on_main(process, lambda: {
        name: weights_fingerprint(path) for name, path in
        (("checkpoint", generation.checkpoint or TOY_WEIGHTS), ("controlnet", generation.controlnet)) if path})
    common = {"seed": generation.seed, "preset": generation.preset, "weights": weights,
              "dtype": generation.dtype or default_dtype(device)}
    folders = {}
    for method, options in generation.options.items():
        folders[method] = out / method
        run.generate(pipeline, inputs, folders[method], generation.num_images, options, generation.seed,
                     settings={**common, "sampling": asdict(options)}, process=process, skipped=skipped)
    return folders


def load_metric_networks(metrics: Metrics, device: str | torch.device, notes: list[str]) -> dict:
    """The networks of every metric whose weights are given (None for the others), loaded before any
    measuring so that a wrong file stops the run early. Notes say how to enable the skipped ones."""
    networks = dict.fromkeys(["segmenter", "clip", "inception", "lpips"])
    name = metrics.segmenter
    options = {"model_type": metrics.sam_type} if name == "sam" else {}
    networks["segmenter"] = run.load_weights(make_segmenter, metrics.mask_weights, f"the {name} segmenter", name,
                                             metrics.mask_weights, device, **options)
    if metrics.clip_checkpoint:
        networks["clip"] = run.load_weights(clip_score.load_clip_embedder, metrics.clip_checkpoint,
                                            f"open_clip {metrics.clip_model}", metrics.clip_model,
                                            metrics.clip_checkpoint, device)
    else:
        notes.append("CLIP score and object similarity skipped: give --clip-checkpoint (and --clip-model)")
    if metrics.fid_weights:
        networks["inception"] = run.load_weights(fid_inception.load_fid_inception, metrics.fid_weights,
                                                 "the FID Inception", metrics.fid_weights, device)
    else:
        notes.append("FID skipped: give --fid-weights (and --real DIR, or the inputs are the real images)")
    if metrics.lpips_weights:
        networks["lpips"] = run.load_weights(lpips.load_lpips, " and ".join(metrics.lpips_weights),
                                             f"LPIPS {metrics.lpips_backbone}", metrics.lpips_backbone,
                                             *metrics.lpips_weights, device=device)
    else:
        notes.append("LPIPS diversity skipped: give --lpips-weights BACKBONE LINEAR")
    return networks


def set_metrics(metrics: Metrics, networks: dict, folders: Mapping[str, Path], inputs: list[ManifestInput],
                device: str | torch.device) -> dict[str, dict[str, float]]:
    """The metrics of a whole set of images, one number per method: FID."""
    results = {method: {} for method in folders}
    if networks["inception"] is not None:
        real = run.image_files(metrics.real) if metrics.real else [item.image for item in inputs]
        for method, fid in run.fid_per_method(folders, inputs, networks["inception"], real, device).items():
            results[method]["fid"] = fid
    return results


def planned_outputs(out: Path, inputs: list[ManifestInput], generation: Generation | None) -> list[Path]:
    """Every file evaluate writes: the reports, and --generate's images."""
    generated = [run.generated_path(out / method, item.id, sample) for method in generation.options
                 for item in inputs for sample in range(generation.num_images)] if generation else []
    return [out / "report.json", out / "report.md", *generated]


def evaluate(out: Path, manifest: Path | None, toy: int | None, folders: Mapping[str, Path],
             generation: Generation | None, metrics: Metrics, device: str | torch.device = "cpu",
             process: Process = single_process(), skipped: list[str] | None = None) -> tuple[dict, str] | None:
    """The inputs (`manifest`, or `toy` held-out toy scenes written to OUT/inputs/), the images of each
    method (`folders`, plus those `generation` makes), measured -> (summary, report.md's text); writes
    OUT/report.json (every image's record and the summary) and OUT/report.md, each whole or not at all.
    Where the results go is checked before any work. An input that cannot be used stops the run, or
    with `skipped` is listed there (and in the report's notes) and passed over. Under torchrun every
    process makes its share of the images, then rank 0 alone measures (the others return None)."""
    check_metric_weights(metrics)
    check_output_folder(out)
    manifest = manifest or distributed.on_main(process, lambda: run.write_toy_manifest(out / "inputs", toy))
    inputs = read_manifest(manifest)
    check_spares_inputs(planned_outputs(out, inputs, generation),
                        [manifest, *(path for item in inputs for path in (item.image, item.mask))])
    folders = dict(folders)
    if generation is not None:
        folders.update(generate_methods(generation, inputs, out, device, process, skipped))
    if not process.is_main:
        return None

    notes = []
    networks = load_metric_networks(metrics, device, notes)
    records = [record for method, folder in folders.items()
               for record in run.image_records(method, folder, inputs, networks["segmenter"], networks["clip"],
                                               device, networks["lpips"], skipped)]
    single = sorted({record["method"] for record in records} - {record["method"] for record in records
                                                                 if "background_diversity" in record})
    if single:
        notes.append(f"diversity needs 2 or more images per input; {', '.join(single)} had 1")
    self_check = [input_self_check(item, run.object_mask_of(item), networks["segmenter"]) for item in inputs]
    summary = summarise(records, set_metrics(metrics, networks, folders, inputs, device))
    notes += [f"skipped {message}" for message in skipped or []]
    bounds = intervals(records)
    report = run.markdown_report(
        summary, notes,
        first=[(f"Per method, mean over inputs with its 95% bootstrap interval ({RESAMPLES:,} resamples of the "
                "inputs)", markdown_intervals(bounds))],
        last=[("The segmenter on the inputs themselves (object recall; expansion of the input against itself)",
               markdown_self_check(self_check))])
    report_json = json.dumps({
        "manifest": str(manifest), "folders": {method: str(folder) for method, folder in folders.items()},
        "notes": notes, "summary": summary, "intervals": bounds, "self_check": self_check,
        "records": records}, indent=1)
    atomic_write(out / "report.json", lambda temporary: Path(temporary).write_text(report_json))
    atomic_write(out / "report.md", lambda temporary: Path(temporary).write_text(report))
    return summary, report
