"""How good a generated background is, and how much it grew the object (the object is found again
with salient_outpaint.segmentation).

  expansion.py      object expansion E = area(m_out ∪ m_in) − area(m_in)
  fid.py            Fréchet distance between feature statistics (FID)
  fid_inception.py  the Inception-v3 variant whose pool features FID is defined on
  lpips.py          LPIPS distance and the diversity of several samples
  diversity.py      the toy world's stand-in for LPIPS diversity: per-pixel distance in the background
  clip_score.py     CLIP score of image vs prompt, CLIP similarity of the object before vs after
  report.py         per-image records -> JSON summary and Markdown tables
  run.py            the steps as functions: toy inputs, generate, measure each image, FID per method
  procedure.py      evaluate.py's procedure over them, in order: (generate,) segment, measure, report
"""
