"""A web page and HTTP API for painting new backgrounds around an object (needs `pip install -e ".[app]"`).

  python app.py                                   # the shipped toy model, on http://127.0.0.1:7860
  python app.py --host 0.0.0.0 --port 8080 \\
      --checkpoint weights/stable-diffusion-2-inpainting --controlnet weights/photo-background-generation/controlnet \\
      --segmenter sam --mask-weights weights/sam_vit_b_01ec64.pth      # or inspyrenet with ckpt_base.pth

The models load once, at start; requests queue and run one at a time. The same functions are an HTTP
API: see README.md ("Web app and HTTP API") for a Python and a curl example.
"""
from __future__ import annotations

import argparse
import sys

from salient_outpaint.app.service import OutpaintService
from salient_outpaint.app.memory import DEFAULT_FRACTION, FULL_SIZE_WORK, GIB, machine_memory
from salient_outpaint.data.images import DEFAULT_MAX_PIXELS, check_max_pixels
from salient_outpaint.checkpoints import CheckpointError
from salient_outpaint.config import PRESETS
from salient_outpaint.device import check_device, default_device
from salient_outpaint.hires import add_hires_arguments, hires_options
from salient_outpaint.inputs import check_number
from salient_outpaint.loading import REPOSITORY, TOY_EXAMPLE, TOY_WEIGHTS, load_models
from salient_outpaint.options import SAMPLING_PRESETS, OptionError, SamplingOptions, preset_with
from salient_outpaint.segmentation import SEGMENTERS


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on; 0.0.0.0 for every interface (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="(default: 7860)")
    parser.add_argument("--preset", choices=sorted(PRESETS),
                        help="architecture (default: toy without --checkpoint, else sd2-inpaint)")
    parser.add_argument("--checkpoint", help="SI2 weights: an ldm file or a diffusers folder "
                                             f"(default: the toy model in {TOY_WEIGHTS.relative_to(REPOSITORY)})")
    parser.add_argument("--controlnet", help="ControlNet weights in any layout (default: the one in --checkpoint)")
    parser.add_argument("--segmenter", choices=SEGMENTERS,
                        help="finds the object of a photo without a mask: inspyrenet (alone) or sam (at the points "
                             "clicked), with --mask-weights; colour for the toy world (default: colour with the "
                             "toy model, inspyrenet with --mask-weights, else none: masks are uploaded or painted)")
    parser.add_argument("--mask-weights", help="the segmenter's weights: transparent-background's ckpt_base.pth, "
                                               "or a segment-anything checkpoint")
    parser.add_argument("--device", default=default_device())
    parser.add_argument("--preset-sampling", choices=sorted(SAMPLING_PRESETS),
                        help="the page's and the API's default sampling settings, e.g. fast (default: 20 dpm++2m "
                             "steps, guidance 7.5)")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                        help=f"largest upload, in pixels (default: {DEFAULT_MAX_PIXELS:,})")
    add_hires_arguments(parser)
    parser.add_argument("--max-memory", type=float, metavar="GIB",
                        help="memory a request may take, in GiB: one whose estimate (a photo's pixels x "
                             f"({FULL_SIZE_WORK + 16} + 3 x its images) bytes, images doubled by compare; README.md) "
                             "is larger is refused before any model runs (default: "
                             f"{DEFAULT_FRACTION * 100:.0f}%% of this machine's or container's, "
                             f"{DEFAULT_FRACTION * machine_memory() / GIB:.1f})")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        from salient_outpaint.app.ui import build_app  # Gradio, an optional extra
    except ImportError as error:
        print(f"error: the app needs Gradio ({error}); install it with pip install -e \".[app]\"", file=sys.stderr)
        return 2
    segmenter = args.segmenter or ("colour" if not args.checkpoint else "inspyrenet" if args.mask_weights else None)
    try:
        check_max_pixels(args.max_pixels)
        if args.max_memory is not None:
            check_number("--max-memory", args.max_memory, above=0)
        hires = hires_options(args)
        device = check_device(args.device)
        service = OutpaintService(load_models(args.checkpoint, args.controlnet, args.preset), device=device,
                                  max_pixels=args.max_pixels, segmenter=segmenter, mask_weights=args.mask_weights,
                                  hires=hires, max_memory=round(args.max_memory * GIB) if args.max_memory else None)
    except OptionError as error:
        print(f"error: {error.with_flags()}", file=sys.stderr)
        return 2
    except (CheckpointError, FileNotFoundError, ImportError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    app = build_app(service, example=None if args.checkpoint else TOY_EXAMPLE,
                    sampling=preset_with(args.preset_sampling, SamplingOptions()))
    app.launch(server_name=args.host, server_port=args.port, max_file_size="200mb", ssr_mode=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
