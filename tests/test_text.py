"""The prompt side: open_clip's tokenizer works offline and long prompts are cut with a warning."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from salient_outpaint.config import TOY
from salient_outpaint.modules import TextEncoder, Tokenizer
from salient_outpaint.modules.text import encode_prompts


def test_tokenizer_pads_to_the_context_with_start_and_end_tokens():
    tokens = Tokenizer(77)(["a red star in front of a brick wall", ""])
    assert tokens.shape == (2, 77) and tokens.dtype == torch.long
    start, end = 49406, 49407
    assert tokens[0, 0] == start and (tokens[0] == end).sum() == 1 and tokens[0, -1] == 0
    assert tokens[1, :2].tolist() == [start, end] and not tokens[1, 2:].any()


def test_the_tokenizer_loaded_alone_is_open_clips_own_and_spares_its_model_zoo():
    """Tokenizer loads open_clip's tokenizer.py by itself (modules/text.py): the same tokens as the package's
    SimpleTokenizer, while sample.py's start never imports the open_clip package and torchvision's models."""
    from open_clip.tokenizer import SimpleTokenizer

    prompts = ["a red star in front of a brick wall", "", "  Café au LAIT, 2x zoom!!  ", "ünïcödé — 東京 &amp; «quotes»",
               "it's 3.14 o'clock; we'll see", "word " * 100]
    assert torch.equal(Tokenizer(77)(prompts[:-1]), SimpleTokenizer()(prompts[:-1]))
    with pytest.warns(UserWarning, match="truncated"):
        assert torch.equal(Tokenizer(77)(prompts[-1:]), SimpleTokenizer()(prompts[-1:]))
    probe = ("import sys, sample; from salient_outpaint.modules import Tokenizer; Tokenizer(77)(['a cat']); "
             "print(sorted(name for name in ('open_clip', 'torchvision') if name in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_prompt_longer_than_the_context_is_truncated_with_a_warning():
    with pytest.warns(UserWarning, match="truncated to 77"):
        tokens = Tokenizer(77)(["word " * 100])
    assert tokens[0, -1] == 49407  # still ends with the end token


def test_causal_mask_makes_each_position_independent_of_later_tokens():
    torch.manual_seed(0)
    encoder = TextEncoder(TOY.text).eval()
    tokens = Tokenizer(77)(["a blue ring", "a blue ring on grass"])
    with torch.no_grad():
        context = encode_prompts(encoder, Tokenizer(77), ["a blue ring", "a blue ring on grass"])
    assert context.shape == (2, 77, TOY.text.width)
    shared = 4  # start token + "a blue ring"
    assert torch.equal(tokens[0, :shared], tokens[1, :shared])
    torch.testing.assert_close(context[0, :shared], context[1, :shared])
    assert not torch.allclose(context[0, shared:], context[1, shared:])
