"""Run by test_training.py, alone or under torchrun: train with train.py's flags, then save this
rank's ControlNet weights to OUT/rank<r>.pt so the test can compare ranks and process counts.

    python tests/ddp_worker.py OUT [train.py flags]
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import train as train_cli  # noqa: E402
from salient_outpaint import distributed  # noqa: E402
from salient_outpaint.training.loop import Trainer, run  # noqa: E402
from salient_outpaint.training.run_folder import run_folder  # noqa: E402

out = Path(sys.argv[1])
config, _ = train_cli.parse_args(sys.argv[2:] + ["--out-dir", str(out)])
process = distributed.start()
with run_folder(config, process) as state:
    trainer = Trainer(config, process)
    run(trainer, state)
torch.save(trainer.networks.controlnet.state_dict(), out / f"rank{process.rank}.pt")
distributed.stop()
