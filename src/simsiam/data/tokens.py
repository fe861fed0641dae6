"""Captions as token ids: open_clip's CLIP tokenizer, applied once when the data is loaded.

Source: Radford et al. 2021, section 2.4 (lower-cased byte-pair encoding, 49,152 merges,
vocabulary 49,408, sequences bracketed by start and end tokens, at most 76 + 1 tokens);
the tokenizer is ``open_clip.SimpleTokenizer`` (its vocabulary ships inside the package,
so it works offline). A caption longer than the context is cut and its last position
holds the end token, as open_clip does.
"""

from __future__ import annotations

import numpy as np
import torch

START_TOKEN, END_TOKEN = 49406, 49407  # <start_of_text>, <end_of_text>
# view_seed-style stream tag for the per-epoch choice of each image's caption
_CAPTION_STREAM = 0xCA9_7104


def clip_tokenizer(context_length: int = 77):
    """open_clip's tokenizer: ``tokenizer(list[str]) -> (N, context_length)`` int64, zero
    padding (open_clip is imported here, not when :mod:`simsiam` is)."""
    from open_clip import SimpleTokenizer

    return SimpleTokenizer(context_length=context_length)


def tokenize_captions(captions: list[list[str]], context_length: int
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Every caption of every image as token ids.

    Args:
        captions: one list of captions (at least one) per image.
        context_length: tokens per caption, start and end included.

    Returns:
        ``(tokens, counts)``: ``(N, K, context_length)`` int32 (K = the most captions of any
        image; missing ones are all zeros) and ``(N,)`` int64 caption counts.

    Raises:
        ValueError: an image without captions.
    """
    counts = torch.tensor([len(c) for c in captions], dtype=torch.int64)
    if len(captions) and int(counts.min()) == 0:
        raise ValueError(f"image {int(counts.argmin())} has no caption")
    k = int(counts.max()) if len(captions) else 1
    tokens = torch.zeros(len(captions), k, context_length, dtype=torch.int32)
    flat = [c for caps in captions for c in caps]
    if flat:
        ids = clip_tokenizer(context_length)(flat).to(torch.int32)
        rows = torch.repeat_interleave(torch.arange(len(captions)), counts)
        cols = torch.cat([torch.arange(int(n)) for n in counts])
        tokens[rows, cols] = ids
    return tokens, counts


def caption_choice(counts: torch.Tensor, seed: int, epoch: int) -> torch.Tensor:
    """Which caption each image shows in ``epoch``: ``(N,)`` int64, uniform over its
    ``counts`` captions, a function of (seed, epoch) only (a resumed run draws the same)."""
    entropy = np.random.SeedSequence([seed, epoch, _CAPTION_STREAM])
    u = np.random.default_rng(entropy).random(len(counts))
    return torch.from_numpy((u * counts.numpy()).astype(np.int64))
