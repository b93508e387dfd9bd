"""The command line:

    python -m salient_outpaint.data.captions ROOT --out captions.jsonl --weights FILE [--model coca_ViT-L-14]
    python -m salient_outpaint.data.captions --check captions.jsonl ROOT

Captions the images of a salient-object folder (any layout `--data salient:ROOT` reads) with an open_clip
CoCa model from a local weights file, into the JSONL that `--data salient:ROOT:captions.jsonl` reads;
interrupted, the same command carries on where it stopped. Greedy decoding unless --beams is given
(open_clip's own default is --beams 6 --beam-groups 3). --check lists the images of ROOT that the
captions file lacks (exit status 1 if any), as training would refuse them.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ...inputs import flag
from ...outputs import check_spares_inputs, ends_in_one_line
from ..layouts import dataset_images
from .coca import DEFAULT_MODEL, CocaCaptioner, load_coca
from .decoding import Decoding
from .folder import caption_folder, check_batch_size, missing_captions

DEFAULTS = Decoding()


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m salient_outpaint.data.captions", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="the dataset folder (its images are captioned, never its masks)")
    parser.add_argument("--check", type=Path, metavar="CAPTIONS",
                        help="list the images of ROOT without a caption in CAPTIONS, and caption nothing")
    parser.add_argument("--out", type=Path, help="the captions file to write or complete (JSONL)")
    parser.add_argument("--weights", type=Path, help="the CoCa weights file (open_clip's release of --model)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"an open_clip CoCa model (default: {DEFAULT_MODEL})")
    parser.add_argument("--beams", type=int, default=DEFAULTS.beams, help="beam search with this many beams "
                        "(default: 1, greedy)")
    parser.add_argument("--beam-groups", type=int, default=DEFAULTS.beam_groups,
                        help="groups of beams, as open_clip's num_beam_groups (default: 1)")
    parser.add_argument("--max-length", type=int, default=DEFAULTS.max_length,
                        help=f"tokens, counting the start token and the prefix (default: {DEFAULTS.max_length})")
    parser.add_argument("--prefix", default="", help='text every caption starts with, e.g. "a photo of"')
    parser.add_argument("--repetition-penalty", type=float, default=DEFAULTS.repetition_penalty,
                        help="divide the scores of tokens already used by this (default: 1, off)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per batch (default: 16)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser


def check(captions: Path, root: Path) -> int:
    missing, total = missing_captions(captions, root)
    for image in missing:
        print(image)
    print(f"{len(missing)} of {total} image(s) in {root} have no caption in {captions}" if missing else
          f"all {total} image(s) in {root} have a caption in {captions}", file=sys.stderr)
    return 1 if missing else 0


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    return ends_in_one_line(lambda: run(args))  # Ctrl-C, a full disk: one line; a rerun carries on


def run(args) -> int:
    try:
        if args.check is not None:
            return check(args.check, args.root)
        for name in ("out", "weights"):
            if getattr(args, name) is None:
                raise ValueError(f"give {flag(name)} FILE (or --check CAPTIONS to check a captions file)")
        check_batch_size(args.batch_size)
        _, images = dataset_images(args.root)  # a wrong folder is refused before the model loads
        if args.out.is_dir():
            raise ValueError(f"--out {args.out} is a folder; give the captions file to write (e.g. captions.jsonl)")
        check_spares_inputs([args.out], images)  # never write captions over one of the photos
        decoding = Decoding(beams=args.beams, beam_groups=args.beam_groups, max_length=args.max_length,
                            repetition_penalty=args.repetition_penalty)
        model, preprocess, tokenizer = load_coca(args.model, args.weights, torch.device(args.device))
        captioner = CocaCaptioner(model, preprocess, tokenizer, decoding, args.prefix)
        run = caption_folder(args.root, args.out, captioner, args.batch_size)
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"captioned {run.captioned} image(s) into {args.out} ({run.already} were there already"
          + (f", {run.unreadable} unreadable skipped)" if run.unreadable else ")"))
    return 0

