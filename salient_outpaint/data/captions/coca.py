"""An open_clip CoCa model as a captioner: pictures -> caption strings, through decoding.py.

The model, its image preprocessing and its BPE tokenizer are open_clip's, built from a local weights
file (nothing is downloaded). The image is encoded once per batch; each decoding step runs the text
tower and the multimodal decoder on the whole text so far, as open_clip's `generate` does.
"""
from __future__ import annotations

from pathlib import Path

import open_clip
import torch
from PIL import Image

from .decoding import Decoding, decode

DEFAULT_MODEL = "coca_ViT-L-14"
WEIGHTS_TAG = "laion2b_s13b_b90k"  # the release of open_clip's CoCa weights named in the error below


def missing_weights_message(model_name: str, weights: Path) -> str:
    hub = (open_clip.get_pretrained_cfg(model_name, WEIGHTS_TAG) or {}).get("hf_hub", "")
    where = (f"https://huggingface.co/{hub.rstrip('/')} (open_clip_model.safetensors or open_clip_pytorch_model.bin)"
             if hub else f"the open_clip release of {model_name}")
    return f"no CoCa weights at {weights}; download them from {where} and pass the file with --weights FILE"


class CocaCaptioner:
    """Captions a batch of pictures with a CoCa model, optionally continuing a prefix ("a photo of")."""

    def __init__(self, model: torch.nn.Module, preprocess, tokenizer, decoding: Decoding, prefix: str = ""):
        self.model, self.preprocess, self.tokenizer, self.decoding = model.eval(), preprocess, tokenizer, decoding
        self.start, self.stop, self.pad = tokenizer.sot_token_id, tokenizer.eot_token_id, model.pad_id
        self.prompt = [self.start] + tokenizer.encode(prefix)  # the start token, then the prefix's tokens
        if len(self.prompt) + 1 >= decoding.max_length:
            raise ValueError(f"the --prefix {prefix!r} takes {len(self.prompt) - 1} tokens, which leaves no room "
                             f"within --max-length {decoding.max_length}; raise it or shorten the prefix")
        if decoding.max_length > model.context_length:
            raise ValueError(f"the maximum length must be at most {model.context_length} tokens, the text context of "
                             f"this CoCa model, not {decoding.max_length}")

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def tokens(self, pixels: torch.Tensor) -> list[list[int]]:
        """(B, 3, S, S) preprocessed pixels -> each caption's tokens (start token, prefix, text, end token)."""
        with torch.no_grad():
            image_latent, image_embs = self.model._encode_image(pixels)  # (B, D), (B, Q, W)

        def next_scores(tokens: torch.Tensor) -> torch.Tensor:  # (B * k, L) -> (B * k, V), k texts per image
            repeats = len(tokens) // len(pixels)
            return self.model(None, tokens, image_latent=image_latent.repeat_interleave(repeats, dim=0),
                              image_embs=image_embs.repeat_interleave(repeats, dim=0),
                              output_labels=False)["logits"][:, -1]

        prompt = torch.tensor([self.prompt] * len(pixels), device=pixels.device)  # (B, L0)
        return decode(next_scores, prompt, self.decoding, self.stop, self.pad)

    def text(self, tokens: list[int]) -> str:
        """Caption tokens -> the caption, prefix included, without the start and end tokens."""
        words = [token for token in tokens[1:] if token != self.stop]
        return self.tokenizer.decode(words).strip()

    def __call__(self, pictures: list[Image.Image]) -> list[str]:
        pixels = torch.stack([self.preprocess(picture) for picture in pictures]).to(self.device)  # (B, 3, S, S)
        return [self.text(tokens) for tokens in self.tokens(pixels)]


def load_coca(model_name: str, weights: str | Path, device: str | torch.device = "cpu"):
    """(model, image preprocessing, tokenizer) of an open_clip CoCa architecture with weights from a local file."""
    weights = Path(weights)
    if not weights.is_file():
        raise FileNotFoundError(missing_weights_message(model_name, weights))
    if model_name not in open_clip.list_models() or not model_name.startswith("coca"):
        coca_models = ", ".join(name for name in open_clip.list_models() if name.startswith("coca"))
        raise ValueError(f"--model {model_name} is not an open_clip CoCa model; choose one of {coca_models}")
    # an absolute path, which open_clip cannot take for one of its download tags
    model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=str(weights.resolve()),
                                                                 device=device)
    return model, preprocess, open_clip.get_tokenizer(model_name)
