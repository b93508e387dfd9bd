"""The page: upload -> mask overlay to correct -> prompt and settings -> results, SI2 alone beside them.

The two events that use the models are also HTTP endpoints (Gradio's API): "mask" (the object mask
as the page shows it) and "generate"; the rest only change the page. Both share one concurrency group,
so the device runs one request at a time and the rest wait in the queue. A request the app cannot serve
raises gr.Error: one line in the page (or in the API client's exception), one line in the server's log,
never a stack trace, and the server goes on serving.
"""
from __future__ import annotations

import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

import gradio as gr
import numpy as np
import torch

from ..data.masks import binarize
from ..inputs import InputError
from ..options import SamplingOptions
from ..sampling import SAMPLERS
from .mask_editing import clicker_view, edited_mask, editor_value, photo_point
from .service import MAX_IMAGES, MAX_STEPS, OutpaintService
from .uploads import read_photo

QUEUE_SIZE = 64  # requests waiting beyond this are told the queue is full instead of waiting for hours
INTRO = """# salient-outpaint
Upload a product photo (or an RGBA cut-out), check the object mask (red), describe the new background.
The ControlNet keeps the object from growing past its outline; tick *compare* to see SI2 alone on the same noise."""


def refused(message: str) -> gr.Error:
    """A request the app does not serve: one line in the server's log, the message in the page or in the
    API's response (Gradio shows a gr.Error's message; any other exception arrives as {"error": null})."""
    print(f"refused: {message}", file=sys.stderr)
    return gr.Error(message, print_exception=False)


@contextmanager
def shown_in_page():
    """Input errors (and a raw API value that is no number, such as NaN steps) become one-line gr.Error
    messages; warnings (a truncated prompt, an animated file) become gr.Warning toasts."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        except (InputError, FileNotFoundError, ValueError, TypeError, OverflowError) as error:
            raise refused(str(error)) from None
        except torch.OutOfMemoryError:
            raise refused("out of memory on the device: ask for fewer images, or upload a smaller photo") from None
    for warning in caught:
        gr.Warning(str(warning.message))


def as_pictures(images: torch.Tensor) -> list[np.ndarray]:
    """(N, 3, H, W) uint8 -> N (H, W, 3) uint8 arrays, which the galleries save as full-size PNG."""
    return [image.permute(1, 2, 0).numpy() for image in images]


def quietly_bounded(component: gr.components.Component) -> gr.components.Component:
    """Gradio refuses an API value outside a slider's range with a gr.Error that logs a stack trace;
    the same refusal, logged as one line."""
    preprocess = component.preprocess

    def checked(payload):
        try:
            return preprocess(payload)
        except gr.Error as error:
            raise refused(f"{component.label}: {error.message}") from None

    component.preprocess = checked
    return component


def parse_points(text: str | None) -> list[tuple[float, float]]:
    """"x,y; x,y" (the photo's pixels) -> [(x, y), ...]; empty or None -> []."""
    points = []
    for pair in (text or "").replace(";", " ").split():
        try:
            x, y = (float(value) for value in pair.split(","))
        except ValueError:
            raise InputError(f"points are x,y pairs separated by ';' (like 410,300; 200,150), not {pair!r}") from None
        points.append((x, y))
    return points


def build_app(service: OutpaintService, example: Path | None = None,
              sampling: SamplingOptions = SamplingOptions()) -> gr.Blocks:
    """The Blocks app on `service`; `example` (a folder with object.png, mask.png, prompt.txt) fills the
    page's example row; `sampling` (app.py --preset-sampling) gives the page's and the API's defaults."""

    def show_mask(photo: str | None, mask: str | None = None, points: str | None = None):
        """The object mask found for an upload (the segmenter's answer to the points, the uploaded mask,
        the photo's alpha or plain backdrop, what the segmenter finds alone; else empty, to be painted),
        as the editor's value (the photo at display size, the mask a red layer) and as the photo to
        click points on."""
        if photo is None:
            return None, None
        with shown_in_page():
            points = parse_points(points)
            image, object_mask = service.read(photo, mask, points)
        if not binarize(object_mask).any():
            gr.Info("no object found in the photo: paint it with the brush, upload its mask"
                    + (", or click on it" if service.takes_points else ""))
        return editor_value(image, object_mask), clicker_view(image, object_mask, points)

    def add_point(photo: str | None, points: str, click: gr.SelectData) -> str:
        """A click on the photo (display size) -> the points text with that point (photo pixels) added."""
        if photo is None:
            return points
        with shown_in_page():
            x, y = photo_point(click.index, read_photo(photo, service.max_pixels)[0].shape[-2:])
        return f"{points}; {x:.0f},{y:.0f}" if points else f"{x:.0f},{y:.0f}"

    def generate(photo: str | None, mask: str | None = None, mask_edit: dict | None = None, prompt: str = "",
                 negative_prompt: str | None = None, steps: int = sampling.steps, guidance: float = sampling.guidance,
                 control_scale: float = sampling.control_scale, sampler: str = sampling.sampler, seed: int = 0,
                 num_images: int = 1, compare: bool = False, points: str | None = None,
                 guidance_end: float = sampling.guidance_end, cache_interval: int = sampling.cache_interval,
                 reuse_guidance: bool = sampling.reuse_guidance,
                 progress=gr.Progress(track_tqdm=True)) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """New backgrounds around the object of `photo`, at its full size: PNGs with the ControlNet, and
        with SI2 alone on the same seed when `compare` (else an empty list). The mask: the segmenter's
        answer to `points` ("x,y; x,y" in the photo's pixels) if given, else `mask`, else the photo's
        alpha or plain backdrop, else what the segmenter finds; `mask_edit` (the page's editor, None
        from the API) corrects it."""
        if photo is None:
            raise gr.Error("upload a photo first", print_exception=False)
        with shown_in_page():
            image, object_mask = service.read(photo, mask, parse_points(points))
            if mask_edit is not None:
                object_mask = edited_mask(object_mask, mask_edit.get("layers") or [])
            options = SamplingOptions(steps=int(steps), guidance=float(guidance), control_scale=float(control_scale),
                                      sampler=sampler, guidance_end=float(guidance_end),
                                      cache_interval=int(cache_interval), reuse_guidance=bool(reuse_guidance))
            images, baseline = service.generate(image, object_mask, prompt, negative_prompt or "", options, int(seed),
                                                int(num_images), compare)
        return as_pictures(images), as_pictures(baseline) if baseline is not None else []

    with gr.Blocks(title="salient-outpaint", delete_cache=(600, 3600), analytics_enabled=False) as app:
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column():
                photo = gr.File(label="Photo or RGBA cut-out", file_types=["image"], type="filepath",
                                elem_id="photo")
                mask = gr.File(label="Object mask (optional; white = object)", file_types=["image"], type="filepath",
                               elem_id="mask")
                editor = gr.ImageEditor(
                    label="Object mask (red). Brush adds to the object, eraser removes.", type="numpy",
                    image_mode="RGBA", sources=(), transforms=(), canvas_size=(512, 512),
                    layers=gr.LayerOptions(allow_additional_layers=False, layers=["object"]),
                    brush=gr.Brush(colors=["rgb(255, 0, 0)"], color_mode="fixed"), eraser=gr.Eraser(), elem_id="editor")
                with gr.Group(visible=service.takes_points):
                    clicker = gr.Image(label=f"Click on the object: points for the {service.segmenter_name} segmenter",
                                       interactive=False, height=320, elem_id="clicker")
                    with gr.Row():
                        points = gr.Textbox(label="Points (x,y in the photo's pixels)", interactive=False, scale=3,
                                            elem_id="points")
                        clear_points = gr.Button("Clear points", scale=1)
            with gr.Column():
                prompt = gr.Textbox(label="Prompt", placeholder="what the new background should show",
                                    elem_id="prompt")
                negative_prompt = gr.Textbox(label="Negative prompt", placeholder="what to steer away from")
                with gr.Row():
                    steps = quietly_bounded(gr.Slider(1, MAX_STEPS, value=sampling.steps, step=1, label="Steps",
                                                      elem_id="steps"))
                    guidance = quietly_bounded(gr.Slider(0, 20, value=sampling.guidance, step=0.5, label="Guidance"))
                    control_scale = quietly_bounded(gr.Slider(0, 2, value=sampling.control_scale, step=0.05,
                                                              label="ControlNet scale"))
                with gr.Row():
                    guidance_end = quietly_bounded(gr.Slider(0, 1, value=sampling.guidance_end, step=0.05,
                                                             label="Guidance until (fraction of the steps)"))
                    cache_interval = quietly_bounded(gr.Slider(1, 10, value=sampling.cache_interval, step=1,
                                                               label="Full network call every N steps (feature reuse)"))
                    reuse_guidance = gr.Checkbox(value=sampling.reuse_guidance,
                                                 label="Reuse guidance on the steps between")
                with gr.Row():
                    sampler = gr.Dropdown(sorted(SAMPLERS), value=sampling.sampler, label="Sampler")
                    seed = quietly_bounded(gr.Number(value=0, precision=0, minimum=0, label="Seed"))
                    num_images = quietly_bounded(gr.Slider(1, MAX_IMAGES, value=2, step=1, label="Images"))
                compare = gr.Checkbox(label="Compare with SI2 alone (ControlNet scale 0, same noise)", elem_id="compare")
                button = gr.Button("Generate", variant="primary", elem_id="generate")
        with gr.Row():
            results = gr.Gallery(label="With the ControlNet (full size)", format="png", columns=4, elem_id="results")
            baseline = gr.Gallery(label="SI2 alone, same noise", format="png", columns=4, visible=False,
                                  elem_id="baseline")
        if example is not None:
            gr.Examples([[str(example / "object.png"), (example / "prompt.txt").read_text().strip()]],
                        inputs=[photo, prompt])

        for upload in (photo, mask):  # a new upload starts without points
            upload.change(lambda: "", None, points, api_visibility="private", queue=False)
        gr.on([photo.change, mask.change, points.change], show_mask, [photo, mask, points], [editor, clicker],
              api_name="mask", concurrency_id="device")
        clicker.select(add_point, [photo, points], points, api_visibility="private", concurrency_id="device")
        clear_points.click(lambda: "", None, points, api_visibility="private", queue=False)
        compare.change(lambda shown: gr.Gallery(visible=shown), compare, baseline, api_visibility="private",
                       queue=False)
        button.click(generate, [photo, mask, editor, prompt, negative_prompt, steps, guidance, control_scale,
                                sampler, seed, num_images, compare, points, guidance_end, cache_interval,
                                reuse_guidance], [results, baseline], api_name="generate",
                     concurrency_id="device")
    app.queue(default_concurrency_limit=1, max_size=QUEUE_SIZE)
    return app
