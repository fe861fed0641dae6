"""The NVIDIA DALI input path (simsiam.data.dali): the stream path's batches, decoded by DALI.

DALI is an optional extra: without it these tests are skipped, except the fallback; with
it and no GPU the pipeline runs on DALI's CPU operators; on a GPU with nvJPEG."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from simsiam.augment.batched import BatchedViewAugment
from simsiam.config import AugmentConfig, load_config
from simsiam.data.dali import dali_available, dali_or_why
from simsiam.data.loaders import input_pipeline
from simsiam.data.stream import StreamViewLoader, StreamViews
from simsiam.errors import DataWarning

needs_dali = pytest.mark.skipif(not dali_available(), reason="NVIDIA DALI is not installed "
                                "(optional extra [dali])")


def _files(tmp_path: Path, n: int = 8) -> list[Path]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        smooth = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        img = Image.fromarray(smooth).resize((120 + 10 * i, 90 + 5 * i), Image.BICUBIC)
        out.append(tmp_path / f"{i}.jpg")
        img.save(out[-1], quality=95)
    return out


def test_dali_without_a_gpu_or_dali_runs_the_stream_path_with_a_notice():
    cfg = load_config("photos-cpu", {"data.source": "x", "data.pipeline": "dali"})
    why = dali_or_why(torch.device("cpu"))
    assert why == "the training device is cpu, not a GPU"
    with pytest.warns(DataWarning, match="data.pipeline dali: the training device is cpu"):
        assert input_pipeline(cfg, torch.device("cpu")) == "stream"


def _loaders(files: list[Path], device: torch.device, batch: int = 4):
    from simsiam.data.dali import DaliViewLoader

    aug = BatchedViewAugment(AugmentConfig(recipe="simsiam"), 32)
    names = [str(f) for f in files]
    dali = DaliViewLoader(files, names, aug, batch, 0, device, threads=1)
    stream = StreamViewLoader(files, names, aug, batch, 0, device, num_workers=0, draft=False)
    return dali, stream


@needs_dali
def test_dali_batches_are_the_stream_batches(tmp_path):
    files = _files(tmp_path)
    dali, stream = _loaders(files, torch.device("cpu"))
    for loader in (dali, stream):
        loader.sampler.set_epoch(3)
    got, ref = list(dali), list(stream)
    assert len(got) == len(ref) == 2
    for (a1, a2, ai), (b1, b2, bi) in zip(got, ref, strict=True):
        assert torch.equal(ai, bi) and a1.shape == b1.shape == (4, 3, 32, 32)
        # the same boxes and the same device parameters: the views differ by the two
        # decoders' and resize filters' rounding only
        std = torch.tensor(dali.augment.std).view(1, 3, 1, 1)
        for a, b in ((a1, b1), (a2, b2)):
            assert float(((a - b) * std).abs().mean()) < 3.0 / 255


@needs_dali
def test_dali_crops_match_the_pil_crops_of_the_same_boxes(tmp_path):
    files = _files(tmp_path)
    dali, _ = _loaders(files, torch.device("cpu"))
    crops = dali._dali_batch(0, [0, 1, 2, 3])
    pil = StreamViews(files, [str(f) for f in files], dali.specs, 0, draft=False)
    for j in range(4):
        ref, _, _ = pil[(0, j)]
        for v in range(2):
            diff = (crops[v][j].int() - ref[v].int()).abs().float().mean()
            assert diff < 3.0, (j, v, float(diff))


@needs_dali
def test_a_file_dali_cannot_decode_is_named_and_replaced(tmp_path):
    files = _files(tmp_path)
    data = files[2].read_bytes()
    files[2].write_bytes(data[: len(data) // 2])
    dali, _ = _loaders(files, torch.device("cpu"), batch=8)
    dali.sampler.set_epoch(0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        (x1, _, index), = list(dali)
    assert x1.shape[0] == 8 and 2 not in index.tolist()
    assert any("2.jpg" in str(w.message) for w in caught)


@needs_dali
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_dali_feeds_views_on_the_gpu(tmp_path):
    files = _files(tmp_path)
    dali, stream = _loaders(files, torch.device("cuda"))
    dali.sampler.set_epoch(0)
    x1, x2, index = next(iter(dali))
    assert x1.is_cuda and x1.shape == (4, 3, 32, 32) and torch.isfinite(x1).all()
