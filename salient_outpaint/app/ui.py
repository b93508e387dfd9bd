"""The page: upload -> mask overlay to correct -> prompt and settings -> results, SI2 alone beside them.

The two events that use the models are also HTTP endpoints (Gradio's API): "mask" (the object mask
as the page shows it) and "generate"; the rest only change the page. Both share one concurrency group,
so the device runs one request at a time and the rest wait in the queue. A request the app cannot serve raises gr.Error: one line in the page (or in
the API client's exception), never a stack trace, and the server goes on serving.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from pathlib import Path

import gradio as gr
import numpy as np
import torch

from ..data.images import to_uint8
from ..pipeline import InputError, SamplingOptions
from ..sampling import SAMPLERS
from .mask_editing import edited_mask, editor_value
from .service import MAX_IMAGES, MAX_STEPS, OutpaintService

QUEUE_SIZE = 64  # requests waiting beyond this are told the queue is full instead of waiting for hours
INTRO = """# salient-outpaint
Upload a product photo (or an RGBA cut-out), check the object mask (red), describe the new background.
The ControlNet keeps the object from growing past its outline; tick *compare* to see SI2 alone on the same noise."""


@contextmanager
def shown_in_page():
    """Input errors become one-line gr.Error messages; warnings (a binarised mask, a truncated prompt)
    become gr.Warning toasts."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield
        except (InputError, FileNotFoundError) as error:
            raise gr.Error(str(error), print_exception=False) from None
        except torch.OutOfMemoryError:
            raise gr.Error("out of memory on the device: ask for fewer images, or upload a smaller photo") from None
    for warning in caught:
        gr.Warning(str(warning.message))


def as_pictures(images: torch.Tensor) -> list[np.ndarray]:
    """(N, 3, H, W) in [-1, 1] -> N (H, W, 3) uint8 arrays, which the galleries save as full-size PNG."""
    return [to_uint8(image).permute(1, 2, 0).numpy() for image in images]


def build_app(service: OutpaintService, example: Path | None = None) -> gr.Blocks:
    """The Blocks app on `service`; `example` (a folder with object.png, mask.png, prompt.txt) fills the
    page's example row."""

    def show_mask(photo: str | None, mask: str | None = None) -> dict | None:
        """The object mask found for an upload (its alpha, a plain backdrop, or the uploaded mask; else
        empty, to be painted), as the editor's value: the photo at display size, the mask a red layer."""
        if photo is None:
            return None
        with shown_in_page():
            image, object_mask = service.read(photo, mask)
        if not object_mask.any():
            gr.Info("no object found in the photo: paint it with the brush, or upload its mask")
        return editor_value(image, object_mask)

    def generate(photo: str | None, mask: str | None = None, mask_edit: dict | None = None, prompt: str = "",
                 negative_prompt: str | None = None, steps: int = 20, guidance: float = 7.5, control_scale: float = 1.0,
                 sampler: str = "dpm++2m", seed: int = 0, num_images: int = 1, compare: bool = False,
                 progress=gr.Progress(track_tqdm=True)) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """New backgrounds around the object of `photo`: full-size PNGs with the ControlNet, and with
        SI2 alone on the same seed when `compare` (else an empty list). The mask is `mask` if given,
        else the photo's alpha or plain backdrop; `mask_edit` (the page's editor, None from the API)
        corrects it."""
        if photo is None:
            raise gr.Error("upload a photo first", print_exception=False)
        with shown_in_page():
            image, object_mask = service.read(photo, mask)
            if mask_edit is not None:
                object_mask = edited_mask(object_mask, mask_edit.get("layers") or [])
            options = SamplingOptions(steps=int(steps), guidance=float(guidance), control_scale=float(control_scale),
                                      sampler=sampler)
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
            with gr.Column():
                prompt = gr.Textbox(label="Prompt", placeholder="what the new background should show",
                                    elem_id="prompt")
                negative_prompt = gr.Textbox(label="Negative prompt", placeholder="what to steer away from")
                with gr.Row():
                    steps = gr.Slider(1, MAX_STEPS, value=20, step=1, label="Steps", elem_id="steps")
                    guidance = gr.Slider(0, 20, value=7.5, step=0.5, label="Guidance")
                    control_scale = gr.Slider(0, 2, value=1.0, step=0.05, label="ControlNet scale")
                with gr.Row():
                    sampler = gr.Dropdown(sorted(SAMPLERS), value="dpm++2m", label="Sampler")
                    seed = gr.Number(value=0, precision=0, minimum=0, label="Seed")
                    num_images = gr.Slider(1, MAX_IMAGES, value=2, step=1, label="Images")
                compare = gr.Checkbox(label="Compare with SI2 alone (ControlNet scale 0, same noise)", elem_id="compare")
                button = gr.Button("Generate", variant="primary", elem_id="generate")
        with gr.Row():
            results = gr.Gallery(label="With the ControlNet", format="png", columns=4, elem_id="results")
            baseline = gr.Gallery(label="SI2 alone, same noise", format="png", columns=4, visible=False,
                                  elem_id="baseline")
        if example is not None:
            gr.Examples([[str(example / "object.png"), str(example / "mask.png"), (example / "prompt.txt").read_text()
                          .strip()]], inputs=[photo, mask, prompt])

        gr.on([photo.change, mask.change], show_mask, [photo, mask], editor, api_name="mask", concurrency_id="device")
        compare.change(lambda shown: gr.Gallery(visible=shown), compare, baseline, api_visibility="private",
                       queue=False)
        button.click(generate, [photo, mask, editor, prompt, negative_prompt, steps, guidance, control_scale,
                                sampler, seed, num_images, compare], [results, baseline], api_name="generate",
                     concurrency_id="device")
    app.queue(default_concurrency_limit=1, max_size=QUEUE_SIZE)
    return app
