"""The table and grids of docs/experiments.md from the evaluations of docs/experiments/ablations.sh:

    python docs/experiments/summarise.py RUNS_DIR

Prints the Markdown table (variant | expansion ratio mean / median | background as prompted |
diversity) and the diversity per category, and writes docs/images/ablations_design.png and
docs/images/ablations_steering.png: for 4 held-out scenes, the input, then sample 0 of every row, the
same noise in each column. Rows whose evaluation is missing are marked "not run".
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from salient_outpaint.data.images import load_image, make_grid, save_image  # noqa: E402

# (row, evaluation folder under RUNS_DIR/eval, method within it)
DESIGN = [
    ("1. shipped: ControlNet reads SI2's 9 channels, control image = paint mask (the paper)", "v1-shipped",
     "controlnet"),
    ("toy U-Net alone (SI2's role; control scale 0)", "v1-shipped", "no-controlnet"),
    ("2. ControlNet reads the 4 noisy latents alone", "v2-latent-controlnet", "controlnet"),
    ("3. control image = the masked object", "v3-object-control", "controlnet"),
    ("4. text-to-image U-Net + ControlNet (masked object), object pasted back: SD2+ControlNet", "v4-t2i",
     "controlnet"),
    ("text-to-image U-Net alone, object pasted back", "v4-t2i", "no-controlnet"),
]
STEERING = [
    ("5. control scale 0 (the U-Net alone)", "v1-shipped", "no-controlnet"),
    ("5. control scale 0.25", "v5-scale-0.25", "controlnet"),
    ("5. control scale 0.5", "v5-scale-0.5", "controlnet"),
    ("5. control scale 1 (shipped)", "v1-shipped", "controlnet"),
    ("5. control scale 1.5", "v5-scale-1.5", "controlnet"),
    ("5. ControlNet in the first half of the steps (start 0, end 0.5)", "v5-window-0-0.5", "controlnet"),
    ("5. ControlNet in the second half (start 0.5, end 1)", "v5-window-0.5-1", "controlnet"),
    ("5. ControlNet in the first quarter (start 0, end 0.25)", "v5-window-0-0.25", "controlnet"),
]
GRID_SCENES = ("0000", "0001", "0002", "0003")


def summary_of(runs: Path, folder: str, method: str) -> dict | None:
    report = runs / "eval" / folder / "report.json"
    if not report.is_file():
        return None
    return json.loads(report.read_text())["summary"]["methods"].get(method)


def trained_steps(runs: Path, folder: str) -> str:
    """The training steps of the evaluated weights, where the row trained any (of 3000)."""
    record = runs / "eval" / folder / "trained_steps.txt"
    if not record.is_file():
        return ""
    steps = [line.split()[1] for line in record.read_text().splitlines()]
    return " (" + " + ".join(steps) + " steps)" if any(step != "3000" for step in steps) else ""


def table(runs: Path, rows) -> str:
    lines = ["| variant | expansion ratio, mean / median | background as prompted | diversity (background, "
             "per pixel) |", "| --- | ---: | ---: | ---: |"]
    for row, folder, method in rows:
        summary = summary_of(runs, folder, method)
        if summary is None:
            lines.append(f"| {row} | not run | | |")
            continue
        metrics = summary["metrics"]
        expansion = metrics["expansion_ratio"]
        lines.append(f"| {row}{trained_steps(runs, folder)} | {expansion['mean']:.3f} / {expansion['median']:.3f} | "
                     f"{metrics['background_match']['mean']:.0%} | {metrics['background_diversity']['mean']:.4f} |")
    return "\n".join(lines)


def diversity_per_category(runs: Path, rows) -> str:
    unique = {(folder, method): row for row, folder, method in reversed(rows)}  # a run listed twice: once
    summaries = [(row, summary_of(runs, folder, method)) for (folder, method), row in reversed(unique.items())]
    summaries = [(row, summary) for row, summary in summaries if summary is not None]
    if not summaries:
        return "(no evaluation yet)"
    categories = sorted({category for _, summary in summaries for category in summary["per_category"]})
    lines = ["| variant | " + " | ".join(categories) + " |", "| --- |" + " ---: |" * len(categories)]
    for row, summary in summaries:
        cells = [summary["per_category"].get(category, {}).get("background_diversity", {}).get("mean")
                 for category in categories]
        values = ["–" if cell is None else f"{cell:.3f}" for cell in cells]
        lines.append(f"| {row.split(':')[0]} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def grid(runs: Path, rows, destination: Path) -> None:
    present = [(folder, method) for _, folder, method in rows
               if (runs / "eval" / folder / method / f"{GRID_SCENES[0]}_0.png").is_file()]
    if not present:
        return
    tiles = []
    for scene in GRID_SCENES:
        tiles.append(load_image(runs / "eval" / present[0][0] / "inputs" / f"{scene}.png"))
        tiles += [load_image(runs / "eval" / folder / method / f"{scene}_0.png") for folder, method in present]
    save_image(make_grid(tiles, columns=len(present) + 1), destination)
    print(f"wrote {destination}: input, then " + ", ".join(f"{folder}/{method}" for folder, method in present))


def main(runs: str) -> None:
    runs = Path(runs)
    print("## Design\n\n" + table(runs, DESIGN) + "\n\n## Steering\n\n" + table(runs, STEERING))
    print("\n## Background diversity per category, mean\n\n" + diversity_per_category(runs, DESIGN + STEERING))
    grid(runs, DESIGN, ROOT / "docs" / "images" / "ablations_design.png")
    grid(runs, STEERING, ROOT / "docs" / "images" / "ablations_steering.png")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
