"""The web app and HTTP API (`python app.py`; needs the [app] extra, Gradio).

  uploads.py       uploaded files -> image and mask tensors, refused with one line when unusable
  mask_editing.py  the mask as a red overlay to correct with a brush (or points clicked for a segmenter),
                   and the corrections read back
  service.py       the models and segmenter, loaded once: upload -> mask, mask + prompt -> full-size
                   backgrounds (+ SI2 alone)
  ui.py            the Gradio page, whose events are also the named API endpoints "mask" and "generate"
"""
