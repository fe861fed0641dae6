"""Text-image retrieval: recall@k both ways, an image's captions all counting as its matches.

Source: the protocol of Karpathy & Fei-Fei 2015 and CLIP (Radford et al. 2021, section
3.1.4 and Table 13, Flickr30k/MSCOCO): image->text recall@k is the fraction of images one
of whose captions is among the k captions most similar to it; text->image recall@k the
fraction of captions whose image is among the k images most similar to them. Similarity
is the cosine of the l2-normalised embeddings. The held-out split is made by image (see
:mod:`simsiam.data.captions`), so no caption of a test image was seen in training.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from simsiam.eval.knn import extract_features

RECALL_KS = (1, 5, 10)


def recall_at_k(sim: torch.Tensor, text_image: torch.Tensor,
                ks: tuple[int, ...] = RECALL_KS) -> dict[str, float]:
    """Recall@k, percent, image->text and text->image.

    Args:
        sim: ``(I, T)`` similarities of I images to T captions.
        text_image: ``(T,)`` int64, the image each caption belongs to (several captions may
            share an image; all of them count as its matches).
        ks: the k of each recall (capped at the number of captions / images).

    Returns:
        ``{"i2t_r1": .., "i2t_r5": .., ..., "t2i_r1": .., ...}`` in percent.

    Raises:
        ValueError: shapes that do not match, or a caption index outside ``[0, I)``.
    """
    n_img, n_txt = sim.shape
    if text_image.shape != (n_txt,):
        raise ValueError(f"text_image has shape {tuple(text_image.shape)}, expected ({n_txt},)")
    if n_txt and (int(text_image.min()) < 0 or int(text_image.max()) >= n_img):
        raise ValueError(f"text_image holds image indices outside [0, {n_img})")
    text_image = text_image.to(sim.device)
    out: dict[str, float] = {}
    kmax = max(ks)
    top_txt = sim.topk(min(kmax, n_txt), dim=1).indices  # (I, k): captions per image
    owner = text_image[top_txt] == torch.arange(n_img, device=sim.device)[:, None]
    top_img = sim.t().topk(min(kmax, n_img), dim=1).indices  # (T, k): images per caption
    found = top_img == text_image[:, None]
    for k in ks:
        out[f"i2t_r{k}"] = 100.0 * owner[:, :k].any(dim=1).float().mean().item()
        out[f"t2i_r{k}"] = 100.0 * found[:, :k].any(dim=1).float().mean().item()
    return out


def retrieval_line(record: dict[str, Any], prefix: str = "retrieval_") -> str:
    """``retrieval i2t R@1=.. R@5=.. R@10=.. t2i R@1=.. R@5=.. R@10=..`` (percent) from the
    fields ``{prefix}i2t_r1`` ... of ``record``."""
    i2t = " ".join(f"R@{k}={record[f'{prefix}i2t_r{k}']:.1f}%" for k in RECALL_KS)
    t2i = " ".join(f"R@{k}={record[f'{prefix}t2i_r{k}']:.1f}%" for k in RECALL_KS)
    return f"retrieval i2t {i2t} t2i {t2i}"


@torch.no_grad()
def clip_embeddings(model: Any, images: np.ndarray, captions: list[list[str]],
                    image_size: int, normalize: str, device: torch.device | str = "cpu",
                    batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """l2-normalised image and caption embeddings of a CLIP model, in eval mode.

    Args:
        model: a :class:`~simsiam.methods.clip.CLIP` (``backbone``, ``image_projection``,
            ``encode_text``, ``context_length``).
        images: ``(N, S, S, 3)`` uint8; fed as the evaluation commands feed a backbone
            (:func:`simsiam.eval.knn.eval_transform` at ``image_size``, ``normalize``).
        captions: one list of captions per image.

    Returns:
        ``(image_emb (N, d), text_emb (T, d), text_image (T,) int64)`` on ``device``,
        float32; T is the total number of captions, in image order.
    """
    from simsiam.data.tokens import clip_tokenizer

    feats = extract_features(model.backbone, images, image_size, normalize, device,
                             batch_size, l2_normalize=False, distributed=False)
    image_emb = F.normalize(model.image_projection(feats).float(), dim=1)
    flat = [c for caps in captions for c in caps]
    text_image = torch.repeat_interleave(torch.arange(len(captions)),
                                         torch.tensor([len(c) for c in captions]))
    tokenizer = clip_tokenizer(model.context_length)
    was_training = model.text.training
    model.text.eval()
    try:
        text_emb = torch.cat([model.encode_text(tokenizer(flat[i:i + batch_size]).to(device),
                                                normalize=True).float()
                              for i in range(0, len(flat), batch_size)])
    finally:
        model.text.train(was_training)
    return image_emb, text_emb, text_image.to(device)


def retrieval_record(model: Any, images: np.ndarray, captions: list[list[str]],
                     image_size: int, normalize: str, device: torch.device | str = "cpu",
                     batch_size: int = 256) -> dict[str, Any]:
    """Recall@1/5/10 both ways (:func:`recall_at_k`) of ``model`` on ``images`` and their
    ``captions``, as ``retrieval_i2t_r1`` ... fields with ``retrieval_images`` and
    ``retrieval_captions`` (the counts)."""
    image_emb, text_emb, text_image = clip_embeddings(model, images, captions, image_size,
                                                      normalize, device, batch_size)
    recall = recall_at_k(image_emb @ text_emb.t(), text_image)
    return ({f"retrieval_{k}": v for k, v in recall.items()}
            | {"retrieval_images": len(images), "retrieval_captions": len(text_image)})
