"""Caption tokens from a CoCa model: greedy decoding and group beam search, as open_clip's `generate`
decodes (open_clip/coca_model.py, whose beam search runs on transformers' BeamSearchScorer), written
over the model's forward pass alone so that the package needs no transformers.

Both decoders see the next token's scores through the same two steps open_clip applies:
  1. no stop token while the text is shorter than `min_length` tokens (start token included);
  2. the repetition penalty: the score s of a token already in the text becomes s / p if s > 0, s * p
     if not (p = 1: off).
Scores are the decoder's raw logits; open_clip's beam search adds them up without a log-softmax, and
so does ours, since we decode as it does.

Greedy takes the best token at each step (open_clip's `generation_type="top_k"`, `top_k=1`). A text ends
at the stop token, or at the pad token (open_clip's test; CoCa's pad id 0 is also the token "!"); at
`max_length` tokens the last one is the stop token.

Group beam search (open_clip's default: 6 beams in 3 groups) keeps `beams / groups` candidates per group.
Each group starts from one live beam (the others at -1e9), extends each candidate by its 2 x group-size
best next tokens, and keeps the group-size best; a candidate that picks the stop token among them
becomes a finished text, scored by its summed logits over its length (stop token included). A group is
done once it holds group-size finished texts and its best live score over the current length cannot
beat the worst of them; the search ends when every group is done or the texts reach `max_length`, and
the best finished text over all groups wins. open_clip passes no diversity penalty, so its groups
never see each other: each group repeats the search of the first, and 6 beams in 3 groups give the
captions of 2 beams in 1 group at three times the work.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ...inputs import range_problem

# The text decoder's next-token logits: (N, L) tokens -> (N, V) scores for token L + 1.
NextTokenScores = Callable[[torch.Tensor], torch.Tensor]
FROZEN_SCORE = -1e9  # open_clip's start score of every beam but the first of each group


@dataclass(frozen=True)
class Decoding:
    """How tokens are chosen; the defaults are open_clip's `generate` defaults but for greedy decoding."""
    beams: int = 1  # 1: greedy
    beam_groups: int = 1
    max_length: int = 30  # tokens, counting the start token and any prefix (open_clip's seq_len)
    min_length: int = 5  # no stop token before this many tokens (open_clip's min_seq_len)
    repetition_penalty: float = 1.0  # 1: off

    def __post_init__(self):
        if self.beams < 1 or self.beam_groups < 1 or self.beams % self.beam_groups:
            raise ValueError(f"--beams {self.beams} cannot be split into --beam-groups {self.beam_groups} equal "
                             "groups; give at least 1 of each, the groups dividing the beams")
        if not 1 <= self.min_length < self.max_length:
            raise ValueError(f"--max-length must exceed {self.min_length} tokens (the minimum length, start "
                             f"token included), not {self.max_length}")
        problem = range_problem(self.repetition_penalty, above=0)
        if problem:
            raise ValueError(f"--repetition-penalty must {problem} (1 = off), got {self.repetition_penalty}")


def processed_scores(tokens: torch.Tensor, scores: torch.Tensor, decoding: Decoding, stop: int) -> torch.Tensor:
    """(N, L) tokens, (N, V) next-token scores -> the scores after the minimum length and repetition penalty."""
    if tokens.shape[1] < decoding.min_length:
        scores = scores.clone()
        scores[:, stop] = -torch.inf
    seen = torch.gather(scores, 1, tokens)  # (N, L): the scores of the tokens already in each text
    penalised = torch.where(seen < 0, seen * decoding.repetition_penalty, seen / decoding.repetition_penalty)
    return scores.scatter(1, tokens, penalised)


def greedy(next_scores: NextTokenScores, prompt: torch.Tensor, decoding: Decoding, stop: int,
           pad: int) -> list[list[int]]:
    """(B, L0) prompt tokens (start token, then any prefix) -> each text's tokens, prompt and end token included."""
    tokens = prompt  # (B, L)
    while True:
        ended = (tokens[:, -1] == stop) | (tokens[:, -1] == pad)  # (B,)
        if ended.all():
            break
        scores = next_scores(tokens)[~ended]  # (B', V), the texts still going
        chosen = processed_scores(tokens[~ended], scores, decoding, stop).argmax(dim=-1)
        if tokens.shape[1] + 1 == decoding.max_length:
            chosen = torch.full_like(chosen, stop)
        next_tokens = torch.full((len(tokens),), pad, dtype=tokens.dtype, device=tokens.device)
        next_tokens[~ended] = chosen
        tokens = torch.cat([tokens, next_tokens[:, None]], dim=1)
        if tokens.shape[1] >= decoding.max_length:
            break
    return [text_until_end(row, stop, pad, prompt.shape[1]) for row in tokens.tolist()]


def text_until_end(row: list[int], stop: int, pad: int, prompt_length: int) -> list[int]:
    """A greedy text up to the token that ended it (the rest of the row is padding)."""
    end = next(index for index in range(prompt_length, len(row)) if row[index] in (stop, pad))
    return row[:end + 1]


class FinishedTexts:
    """A group's best `size` finished texts by score (summed logits / length), as transformers keeps them."""

    def __init__(self, size: int):
        self.size, self.texts, self.worst_score = size, [], 1e9  # texts: [(score, tokens)]

    def add(self, tokens: list[int], summed_scores: float, length: int) -> None:
        score = summed_scores / length
        if len(self.texts) < self.size or score > self.worst_score:
            self.texts.append((score, tokens))
            if len(self.texts) > self.size:
                ranked = sorted((text_score, index) for index, (text_score, _) in enumerate(self.texts))
                del self.texts[ranked[0][1]]
                self.worst_score = ranked[1][0]
            else:
                self.worst_score = min(score, self.worst_score)

    def is_done(self, best_live_score: float, length: int) -> bool:
        return len(self.texts) >= self.size and self.worst_score >= best_live_score / length


def beam_search(next_scores: NextTokenScores, prompt: torch.Tensor, decoding: Decoding, stop: int,
                pad: int) -> list[list[int]]:
    """(B, L0) prompt tokens -> each text's best finished tokens (prompt included; the stop token ends it
    unless it ran to max_length). Image b's beams are rows b * beams ... (b + 1) * beams - 1 throughout."""
    batch, beams, groups = len(prompt), decoding.beams, decoding.beam_groups
    group_size = beams // groups
    tokens = prompt.repeat_interleave(beams, dim=0)  # (B * beams, L)
    beam_scores = torch.full((batch, beams), FROZEN_SCORE, device=prompt.device)
    beam_scores[:, ::group_size] = 0  # one live beam per group, so that a group's beams differ
    finished = [[FinishedTexts(group_size) for _ in range(groups)] for _ in range(batch)]
    done = [[False] * groups for _ in range(batch)]
    while True:
        length = tokens.shape[1] + 1  # of the texts after this step
        scores = next_scores(tokens).view(batch, beams, -1)  # (B, beams, V)
        vocabulary = scores.shape[-1]
        next_tokens = torch.empty((batch, beams), dtype=tokens.dtype, device=tokens.device)
        sources = torch.empty((batch, beams), dtype=torch.long, device=tokens.device)  # the row each beam extends
        for group in range(groups):
            columns = slice(group * group_size, (group + 1) * group_size)
            group_tokens = tokens.view(batch, beams, -1)[:, columns]  # (B, G, L)
            group_scores = processed_scores(group_tokens.flatten(0, 1), scores[:, columns].flatten(0, 1),
                                            decoding, stop).view(batch, group_size, vocabulary)
            totals = (group_scores + beam_scores[:, columns, None]).view(batch, group_size * vocabulary)
            top_scores, top_indices = torch.topk(totals, 2 * group_size, dim=1, largest=True, sorted=True)
            for image in range(batch):
                rows = group * group_size + torch.arange(group_size, device=tokens.device) + image * beams
                if done[image][group]:  # frozen: each beam carries a pad token, its text no longer counts
                    beam_scores[image, columns], next_tokens[image, columns], sources[image, columns] = 0, pad, rows
                    continue
                kept = 0
                for rank, (score, index) in enumerate(zip(top_scores[image].tolist(), top_indices[image].tolist())):
                    beam, token = divmod(index, vocabulary)
                    if token == stop:
                        if rank < group_size:
                            text = group_tokens[image, beam].tolist()
                            finished[image][group].add(text, top_scores[image, rank].item(), length)
                        continue
                    beam_scores[image, group * group_size + kept] = top_scores[image, rank]
                    next_tokens[image, group * group_size + kept] = token
                    sources[image, group * group_size + kept] = rows[beam]
                    kept += 1
                    if kept == group_size:
                        break
                done[image][group] = finished[image][group].is_done(top_scores[image].max().item(), length)
        tokens = torch.cat([tokens[sources.flatten()], next_tokens.view(-1, 1)], dim=1)
        if all(all(row) for row in done) or tokens.shape[1] >= decoding.max_length:
            break
    texts = []
    for image in range(batch):
        for group in range(groups):
            if not done[image][group]:  # the live beams count as texts at the length they reached
                for beam in range(group * group_size, (group + 1) * group_size):
                    finished[image][group].add(tokens[image * beams + beam].tolist(),
                                               beam_scores[image, beam].item(), tokens.shape[1])
        best = None  # the best score over all groups; the last one listed among equals, as transformers picks
        for score, text in (text for group in finished[image] for text in group.texts):
            if best is None or score >= best[0]:
                best = (score, text)
        texts.append(best[1] + [stop] if len(best[1]) < decoding.max_length else best[1])
    return texts


def decode(next_scores: NextTokenScores, prompt: torch.Tensor, decoding: Decoding, stop: int,
           pad: int) -> list[list[int]]:
    """Greedy for one beam, group beam search for more: (B, L0) prompts -> B token lists."""
    search = greedy if decoding.beams == 1 else beam_search
    with torch.no_grad():
        return search(next_scores, prompt, decoding, stop, pad)
