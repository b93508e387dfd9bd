"""Peak memory of the largest requests, with the toy model: a benchmark, not a test (it takes minutes).

    python docs/memory_peak.py                 # both, each in a fresh process
    python docs/memory_peak.py --work app      # the app's largest request: 40 MP, 8 images, compare
    python docs/memory_peak.py --work sample   # sample.py on a 40 MP photo with --num-images 8

Each item runs in a fresh process on a 40-megapixel (8000 x 5000) RGBA cut-out written once to
--cache; the figure is that process's VmHWM (the kernel's resident-set high-water mark), so it holds
everything: Python, torch, the model, the decoded photo and the results. The app's request is the
service's own path (OutpaintService.read, .generate, then each picture encoded as PNG, as the page's
gallery does), without the web server around it.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT = 8000, 5000  # 40 megapixels: the app's --max-pixels default, and sample.py's


def photo(cache: Path) -> Path:
    """A 40 MP RGBA cut-out: a red disc on a transparent background (compresses to a small PNG)."""
    import numpy as np
    from PIL import Image

    path = cache / f"cutout_{WIDTH}x{HEIGHT}.png"
    if not path.is_file():
        rows, columns = np.ogrid[:HEIGHT, :WIDTH]
        inside = (rows - HEIGHT / 2) ** 2 + (columns - WIDTH / 2) ** 2 < (HEIGHT / 4) ** 2
        rgba = np.zeros((HEIGHT, WIDTH, 4), dtype=np.uint8)
        rgba[inside] = (220, 30, 30, 255)
        Image.fromarray(rgba).save(path, compress_level=1)
    return path


def high_water_mark() -> float:
    """This process's VmHWM in GiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2 ** 20
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def app_request(path: Path) -> dict:
    import io

    from PIL import Image

    from salient_outpaint.app.memory import request_memory
    from salient_outpaint.app.service import MAX_IMAGES, OutpaintService
    from salient_outpaint.app.ui import as_pictures
    from salient_outpaint.loading import load_models
    from salient_outpaint.options import SamplingOptions

    service = OutpaintService(load_models(), segmenter="colour")
    image, mask = service.read(path)
    images, baseline = service.generate(image, mask, "a brick wall", "", SamplingOptions(steps=2), 0, MAX_IMAGES,
                                        compare=True)
    for picture in as_pictures(images) + as_pictures(baseline):
        Image.fromarray(picture).save(io.BytesIO(), format="PNG")  # what the gallery writes
    return {"estimate_gib": request_memory(HEIGHT, WIDTH, MAX_IMAGES, True) / 2 ** 30}


def sample_run(path: Path) -> dict:
    sys.path.insert(0, str(REPOSITORY))
    import sample

    with tempfile.TemporaryDirectory() as out:
        code = sample.main(["--image", str(path), "--prompt", "a brick wall", "--num-images", "8", "--steps", "2",
                            "--out", out])
    return {"exit_code": code}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", choices=["app", "sample"], nargs="+", default=["app", "sample"])
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "salient_outpaint_memory"))
    parser.add_argument("--child", choices=["app", "sample"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    path = photo(cache)
    if args.child:
        start = time.perf_counter()
        result = {"app": app_request, "sample": sample_run}[args.child](path)
        print(json.dumps({"work": args.child, "peak_gib": round(high_water_mark(), 2),
                          "seconds": round(time.perf_counter() - start, 1), **result}))
        return 0
    for work in args.work:
        subprocess.run([sys.executable, __file__, "--child", work, "--cache", str(cache)], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
