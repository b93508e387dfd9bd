"""Seconds per image of the captioner (python -m salient_outpaint.data.captions) at a fixed 20 tokens:

    python docs/benchmark_captions.py --model coca_ViT-L-14 --batch-size 4 --batches 2 --device cpu

open_clip builds the model with random weights (pretrained=None: nothing downloaded; speed does not depend
on the weights' values; the decoder's output projection, which open_clip builds as zeros, is drawn at random
so that the decoder does not pick the pad token, which ends a greedy caption, at its first step). Greedy
decoding, the stop token suppressed until the 20th token (min_length 20, max_length 21: the start token
and 20 decoded tokens, the last the stop token), so every caption costs the same 20 decoder steps
whatever the weights say. Timed: the image encoding and the 20 steps of a batch of
random 224 x 224 images (the model's preprocessing is not timed), after one warm-up batch; the median batch
is reported per image.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import open_clip
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from salient_outpaint.data.captions.coca import CocaCaptioner  # noqa: E402
from salient_outpaint.data.captions.decoding import Decoding  # noqa: E402

TOKENS = 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="coca_ViT-L-14")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--batches", type=int, default=2, help="timed batches, after one warm-up batch")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = open_clip.create_model(args.model, pretrained=None, device=args.device)
    projection = model.text_decoder.text_projection  # (width, vocabulary), built as zeros by open_clip:
    torch.nn.init.normal_(projection, std=projection.shape[0] ** -0.5)  # every logit 0 would pick token 0 (pad)
    decoding = Decoding(min_length=TOKENS, max_length=TOKENS + 1)
    captioner = CocaCaptioner(model, None, open_clip.get_tokenizer(args.model), decoding)
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    times = []
    for batch in range(args.batches + 1):
        pixels = torch.randn(args.batch_size, 3, size, size, device=args.device)
        start = time.perf_counter()
        tokens = captioner.tokens(pixels)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        lengths = sorted({len(text) - 1 for text in tokens})
        print(f"batch {batch}{' (warm-up)' if batch == 0 else ''}: {times[-1]:.1f} s, tokens per caption {lengths}",
              flush=True)
    per_image = statistics.median(times[1:]) / args.batch_size
    print(f"{args.model} on {args.device}, batch {args.batch_size}, {TOKENS} tokens: {per_image:.2f} s per image "
          f"(median of {args.batches} batches, threads {torch.get_num_threads()})")


if __name__ == "__main__":
    main()
