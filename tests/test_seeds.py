"""The seed streams (salient_outpaint/seeds.py) give torch exactly the seeds of the formulas each
stream was written with, so every random stream draws what it always drew: the old formulas are
written out here, and the first draws compared, large seeds included."""
import pytest
import torch

from salient_outpaint.data.synthetic import SPLIT_OFFSETS
from salient_outpaint.seeds import AUGMENTATION, EPOCH_ORDER, TOY_SCENE, TRAINING_SAMPLE, stream_generator

SEEDS = [0, 1, 42, 2 ** 31 - 1, 4_000_000_000, 2 ** 62 - 57]  # 4e9: TRAINING_SAMPLE's seed passes 2**63
KEYS = [(seed, epoch, index) for seed in SEEDS for epoch, index in ((0, 0), (1, 7), (13, 123_456))]

# (stream, keys of it from (seed, epoch, index), the formula it was written with)
FORMULAS = {
    "epoch order (training/batches.py, data/shards/)":
        (EPOCH_ORDER, lambda seed, epoch, index: (seed, epoch), lambda seed, epoch, index: seed * 1_000_003 + epoch),
    "training sample (training/batches.py)":
        (TRAINING_SAMPLE, lambda seed, epoch, index: (seed + 1, index),
         lambda seed, epoch, index: (seed + 1) * 2_654_435_761 + index),
    "augmentation (data/augment.py)":
        (AUGMENTATION, lambda seed, epoch, index: (seed, epoch, index),
         lambda seed, epoch, index: ((seed * 1_000_003 + epoch) * 1_000_000_007 + index) % 2**63),
    "toy scene, train (data/synthetic.py)":
        (TOY_SCENE, lambda seed, epoch, index: (seed, SPLIT_OFFSETS["train"], epoch, index),
         lambda seed, epoch, index: (((seed * 1_000_033 + 0) * 1_000_037 + epoch) * 10_000_019 + index) % (2 ** 63)),
    "toy scene, test (data/synthetic.py)":
        (TOY_SCENE, lambda seed, epoch, index: (seed, SPLIT_OFFSETS["test"], epoch, index),
         lambda seed, epoch, index: (((seed * 1_000_033 + 1_000_003) * 1_000_037 + epoch) * 10_000_019 + index)
         % (2 ** 63)),
}


def first_draws(generator: torch.Generator) -> tuple[list[int], list[float]]:
    return torch.randperm(10, generator=generator).tolist(), torch.rand(3, generator=generator).tolist()


@pytest.mark.parametrize("name", FORMULAS)
def test_each_stream_draws_what_its_old_formula_drew(name):
    stream, keys_of, old_formula = FORMULAS[name]
    for seed, epoch, index in KEYS:
        try:
            old = torch.Generator().manual_seed(old_formula(seed, epoch, index))
        except ValueError:  # past torch's seed range: the stream refused this seed, and still does
            with pytest.raises(ValueError, match="Overflow"):
                stream_generator(stream, *keys_of(seed, epoch, index))
            continue
        new = stream_generator(stream, *keys_of(seed, epoch, index))
        assert new.initial_seed() == old.initial_seed(), (name, seed, epoch, index)
        assert first_draws(new) == first_draws(old), (name, seed, epoch, index)


def test_the_wrapped_streams_take_any_seed_and_the_others_as_many_as_torch():
    assert stream_generator(AUGMENTATION, 2 ** 62 - 57, 1, 7).initial_seed() < 2 ** 63
    assert stream_generator(TOY_SCENE, 2 ** 62 - 57, 0, 1, 7).initial_seed() < 2 ** 63
    assert stream_generator(TRAINING_SAMPLE, 4_000_000_001, 0).initial_seed() >= 2 ** 63  # unwrapped, as before
    with pytest.raises(ValueError, match="Overflow"):
        stream_generator(EPOCH_ORDER, 2 ** 62 - 57, 0)
