"""Writes toy-world training scenes as a salient-object folder, for timing folders against shards:

    python docs/make_toy_folder.py runs/toy_folder 256 128

OUT/images/NNNN.png, OUT/masks/NNNN.png (white = object) and OUT/captions.jsonl, read by
`--data salient:OUT:OUT/captions.jsonl`.
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from salient_outpaint.data.images import mask_as_image, save_image  # noqa: E402
from salient_outpaint.data.synthetic import ToyWorldDataset  # noqa: E402

out, count, size = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
(out / "images").mkdir(parents=True, exist_ok=True)
(out / "masks").mkdir(parents=True, exist_ok=True)
scenes = ToyWorldDataset(count, size=size, seed=0, split="train")
lines = []
for index in range(count):
    scene = scenes[index]
    save_image(scene["image"], out / "images" / f"{index:04d}.png")
    save_image(mask_as_image(scene["mask"]), out / "masks" / f"{index:04d}.png")
    lines.append(json.dumps({"image": f"{index:04d}.png", "caption": scene["caption"]}))
(out / "captions.jsonl").write_text("\n".join(lines) + "\n")
