"""The lines ``simsiam pretrain`` and ``simsiam demo`` print about a finished (or stopped)
run, from its :class:`~simsiam.train.state.RunResult`.
"""

from __future__ import annotations

from simsiam.config import Config
from simsiam.errors import SimSiamError
from simsiam.eval.monitor import start_name
from simsiam.launch import resume_command
from simsiam.train.state import RunResult

__all__ = ["copy_retrieval_line", "demo_headline", "pretrain_lines", "retrieval_summary"]


def pretrain_lines(res: RunResult, cfg: Config) -> list[str]:
    """``pretrain: N epochs, S steps, final loss L knn_top1=..%; backbone -> PATH`` and the
    retrieval lines when the monitor measured them; for a run stopped by
    ``--stop-after-epoch``, the line that says how to continue it."""
    if res.backbone_path is None:
        return [f"pretrain: stopped after epoch {res.epochs} of {cfg.train.epochs} "
                f"(--stop-after-epoch), {res.steps} steps; continue with: "
                f"{resume_command(res.run_dir)}"]
    last = max(res.knn) if res.knn else None
    knn = f" knn_top1={res.knn[last]:.2f}%" if last is not None else ""
    lines = [f"pretrain: {res.epochs} epochs, {res.steps} steps, final loss "
             f"{res.epoch_loss[res.epochs]:.4f}{knn}; backbone -> {res.backbone_path}"]
    start = start_name(cfg)
    return lines + [line for line in (retrieval_summary(res, start),
                                      copy_retrieval_line(res, start)) if line]


def retrieval_summary(res: RunResult, start: str) -> str | None:
    """``pretrain: retrieval i2t R@10 15.0% t2i R@10 14.9% at epoch 30 (random init: ...)``
    for a method whose monitor measured text-image retrieval (CLIP); else None."""
    measured = {e: v for e, v in res.evals.items() if "retrieval_i2t_r10" in v}
    if not measured or max(measured) == 0:
        return None
    last = measured[max(measured)]
    text = (f"pretrain: retrieval i2t R@10 {last['retrieval_i2t_r10']:.1f}% t2i R@10 "
            f"{last['retrieval_t2i_r10']:.1f}% at epoch {max(measured)}")
    if 0 in measured:
        first = measured[0]
        text += (f" ({start}: {first['retrieval_i2t_r10']:.1f}% / "
                 f"{first['retrieval_t2i_r10']:.1f}%); `simsiam retrieval` gives all six")
    return text


def copy_retrieval_line(res: RunResult, start: str = "random init") -> str | None:
    """``pretrain: copy retrieval top1 26.0% (random init 21.5%) ...``: the label-free
    figure that says whether training helped, when the monitor measured it; else None."""
    measured = {e: v for e, v in res.evals.items() if "copy_top1" in v}
    if not measured:
        return None
    if max(measured) == 0:
        return (f"pretrain: the monitor ran at the start only ({start}; eval.knn_every = 0): "
                f"copy retrieval top1 {measured[0]['copy_top1']:.1f}% before training; the "
                "trained encoder was not evaluated")
    last = measured[max(measured)]
    text = (f"pretrain: copy retrieval top1 {last['copy_top1']:.1f}% top5 "
            f"{last['copy_top5']:.1f}% at epoch {max(measured)}")
    if 0 in measured and max(measured) > 0:
        text += (f" ({start}: {measured[0]['copy_top1']:.1f}% / "
                 f"{measured[0]['copy_top5']:.1f}%; backbone_init.safetensors beside it)")
    if not res.labelled:
        text += "; no labels, so no kNN accuracy"
    return text


def demo_headline(res: RunResult) -> tuple[float, float, str]:
    """(trained, random init, name) of the demo's figure: CLIP's image-to-text R@10 when
    the monitor measured retrieval, else kNN top-1 (percent).

    Raises:
        SimSiamError: the monitor did not run at the start and at the end.
    """
    first, last = res.evals.get(0, {}), res.evals.get(res.epochs, {})
    if "retrieval_i2t_r10" in first and "retrieval_i2t_r10" in last:
        return last["retrieval_i2t_r10"], first["retrieval_i2t_r10"], "clip retrieval i2t R@10"
    if 0 not in res.knn or res.epochs not in res.knn:
        raise SimSiamError("the demo needs the monitor at the start and the end: keep "
                           "eval.knn_every > 0 and use data with held-out test images")
    return res.knn[res.epochs], res.knn[0], "knn_top1"
