"""Makes docs/images/toy_grid.png and the bundled example in weights/toy/example from the shipped toy weights:

    python docs/make_toy_grid.py

Each row: a held-out toy object | its mask | 3 samples of the toy U-Net alone (SI2's role) | 3 with
the ControlNet; same noise for both, prompt asking for a new background.
"""
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from salient_outpaint.checkpoints import load_checkpoint  # noqa: E402
from salient_outpaint.config import TOY  # noqa: E402
from salient_outpaint.data.images import make_grid, save_image  # noqa: E402
from salient_outpaint.data.synthetic import ToyWorldDataset  # noqa: E402
from salient_outpaint.modules import build_models  # noqa: E402
from salient_outpaint.options import SamplingOptions  # noqa: E402
from salient_outpaint.pipeline import OutpaintPipeline  # noqa: E402

# held-out scene index -> the new background asked for
ROWS = {111: "a brick wall", 103: "blue water", 105: "sand", 110: "green grass"}
EXAMPLE = 111


def main():
    models = build_models(TOY)
    load_checkpoint(ROOT / "weights" / "toy", models)
    pipeline = OutpaintPipeline(models)
    scenes = ToyWorldDataset(200, size=64, seed=0, split="test")
    tiles = []
    for index, background in ROWS.items():
        scene = scenes[index]
        thing = scene["caption"].split(" in front of ")[0]
        prompt = f"{thing} in front of {background}"
        samples = [pipeline(scene["image"], scene["mask"], prompt, num_images=3,
                            options=SamplingOptions(control_scale=scale),
                            generator=torch.Generator().manual_seed(0)) for scale in (0.0, 1.0)]
        tiles += [scene["image"], scene["mask"].expand(3, -1, -1) * 2 - 1, *samples[0], *samples[1]]
        if index == EXAMPLE:
            example = ROOT / "weights" / "toy" / "example"
            example.mkdir(parents=True, exist_ok=True)
            save_image(scene["image"], example / "object.png")
            save_image(scene["mask"].expand(3, -1, -1) * 2 - 1, example / "mask.png")
            (example / "prompt.txt").write_text(prompt + "\n")
    save_image(make_grid(tiles, columns=8), ROOT / "docs" / "images" / "toy_grid.png")
    print("wrote docs/images/toy_grid.png and weights/toy/example/")


if __name__ == "__main__":
    main()
