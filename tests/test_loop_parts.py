"""The loop's named parts on their own: the method registry and its config sections, the
parameter-group flags (schedule and optimizer factory), the run state, the checkpointer
(formats 1 and 2), the non-finite guard, and the package's layering."""

from __future__ import annotations

import ast
import dataclasses
import math
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from simsiam.config import ModelConfig, OptimConfig, config_to_dict, load_config
from simsiam.data.batches import ViewBatch
from simsiam.distributed import DistContext
from simsiam.errors import CheckpointError, ConfigError
from simsiam.eval.loading import load_backbone_for_eval
from simsiam.methods import METHODS, BYOLConfig, SimSiamConfig, build_method, param_group
from simsiam.train import (
    Checkpointer,
    LrSchedule,
    NonFiniteGuard,
    RunState,
    build_optimizer,
    cosine_lr,
)
from simsiam.train.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from simsiam.train.logger import NullLogger
from simsiam.train.state import EpochSums

from .conftest import REPO

SMALL = ModelConfig(backbone="resnet18", stem="cifar",
                    simsiam=SimSiamConfig(proj_layers=2, proj_hidden_dim=32, dim=32,
                                          pred_hidden_dim=8),
                    byol=BYOLConfig(dim=16, hidden_dim=32))


# ------------------------------------------------------------------ registry and sections

def test_every_registered_method_has_its_own_typed_section():
    fields = {f.name: f for f in dataclasses.fields(ModelConfig)}
    for name, cls in METHODS.items():
        assert cls.name == name
        assert fields[name].default_factory is cls.Settings  # model.<name> is its Settings
        assert len(cls.traits) == 3 and isinstance(cls.published, dict)
        for key in cls.published:
            assert not key.startswith("model."), (name, key)  # its own keys live in Settings
    assert set(METHODS) == {"simsiam", "simclr", "mocov2", "byol", "swav", "clip"}


def test_build_method_reads_only_the_methods_own_section():
    model = build_method("byol", SMALL, 32)
    assert (model.dim, model.projector.layers[-1].out_features) == (16, 16)
    assert build_method("simsiam", SMALL, 32).dim == 32
    with pytest.raises(ConfigError, match="unknown: choose one of"):
        build_method("dino", SMALL)


def test_a_method_checks_its_own_section_and_names_the_key():
    with pytest.raises(ConfigError, match=r"model\.byol\.base_tau = 1\.5"):
        load_config("cifar10", {"method": "byol", "model.byol.base_tau": 1.5})
    with pytest.raises(ConfigError, match=r"model\.simclr\.temperature = 0"):
        load_config("cifar10", {"method": "simclr", "model.simclr.temperature": 0})
    # another method's section is not checked (nor used) by this run
    assert load_config("cifar10", {"model.byol.base_tau": 1.5}).method == "simsiam"


def test_published_settings_apply_only_when_switching_to_the_method():
    assert load_config("cifar10", {"method": "mocov2"}).optim.base_lr == 0.03
    assert load_config("cifar10", {"method": "mocov2", "optim.base_lr": 0.1}).optim.base_lr \
        == 0.1  # --set wins
    assert load_config("cifar10").optim.base_lr == 0.03  # the preset's own value


def test_flat_keys_of_version_0_1_name_their_new_place():
    with pytest.raises(ConfigError, match=r"'model\.dim' is now 'model\.simsiam\.dim'"):
        load_config("demo-cpu", {"model.dim": 512})
    with pytest.raises(ConfigError, match=r"'model\.proj_hidden_dim' is now "
                                          r"'model\.byol\.hidden_dim'"):
        load_config("demo-cpu", {"method": "byol", "model.proj_hidden_dim": 512})
    with pytest.raises(ConfigError, match=r"'optim\.fix_pred_lr' is now "
                                          r"'model\.simsiam\.fix_pred_lr'"):
        load_config("demo-cpu", {"optim.fix_pred_lr": False})


def test_a_config_yaml_written_by_version_0_1_is_read_into_the_sections(tmp_path):
    old = tmp_path / "config.yaml"
    old.write_text("method: swav\nmodel:\n  backbone: resnet18\n  dim: 64\n"
                   "  proj_hidden_dim: null\n  temperature: 0.2\n  swav_queue_size: 0\n"
                   "  stop_gradient: true\n  ema_momentum: null\noptim:\n  fix_pred_lr: true\n"
                   "augment:\n  small_crops: 2\n")
    with pytest.warns(UserWarning, match=r"0\.1 config .*: read model\.dim, model\."
                                         r"proj_hidden_dim, model\.temperature, model\."
                                         r"swav_queue_size as model\.swav\.\*; ignored "
                                         r"model\.stop_gradient, model\.ema_momentum, "
                                         r"optim\.fix_pred_lr \(not settings of swav"):
        cfg = load_config(old)
    s = cfg.model.swav
    assert (s.dim, s.hidden_dim, s.temperature, s.queue_size) == (64, 2048, 0.2, 0)
    assert cfg.model.simsiam == SimSiamConfig()  # SimSiam's keys were not SwAV's: dropped


# ------------------------------------------------------------- warm-up that fits the run

def test_a_presets_warmup_shrinks_to_fit_a_short_run_with_a_notice():
    with pytest.warns(UserWarning, match=r"warmup_epochs = 1 \(from the file\) does not fit "
                                         r"train\.epochs = 1: .* shortened to 0\.5 epochs"):
        cfg = load_config("demo-cpu", {"train.epochs": 1})
    assert cfg.optim.warmup_epochs == 0.5
    with pytest.warns(UserWarning, match=r"10 \(the paper's rule .*\) does not fit "
                                         r"train\.epochs = 4: .* 2 epochs"):
        big = load_config("cifar10", {"train.batch_size": 2048, "train.epochs": 4})
    assert big.optim.warmup_epochs == 2.0
    # the schedule of the shortened warm-up: up over half the run, then the cosine down
    lrs = [cosine_lr(1.0, e, s, 10, 1, 0.5, per_step=True) for e in (0,) for s in range(10)]
    assert lrs[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert lrs[5] == pytest.approx(1.0) and lrs[9] == pytest.approx(0.5 * (1 + math.cos(
        math.pi * 0.8)))


def test_a_warmup_the_user_set_that_cannot_fit_is_refused_with_the_fix():
    with pytest.raises(ConfigError, match=r"optim\.warmup_epochs = 3\.0 .* fewer than "
                                          r"train\.epochs \(2\).*warmup_epochs=0"):
        load_config("demo-cpu", {"train.epochs": 2, "optim.warmup_epochs": 3})


def test_compare_with_a_budget_of_one_epoch_is_accepted(tmp_path):
    from simsiam.reproduce.compare import method_config

    with pytest.warns(UserWarning, match="shortened to 0.5 epochs"):
        cfg = method_config("simsiam", 1, "cpu", "x", tmp_path)
    assert (cfg.train.epochs, cfg.optim.warmup_epochs) == (1, 0.5)


# ------------------------------------------------------------ parameter groups and flags

class _Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c, self.d = (nn.Linear(2, 2) for _ in range(4))
        self.c.requires_grad_(False)


def test_group_flags_are_applied_by_the_schedule_and_the_optimizer_factory():
    toy = _Toy()
    groups = [param_group("enc", (toy.a,)), param_group("pred", (toy.b,), fixed_lr=True),
              param_group("norms", (toy.c, toy.d), no_weight_decay=True)]
    assert [len(g["params"]) for g in groups] == [2, 2, 2]  # frozen c left out
    opt = build_optimizer(groups, OptimConfig(weight_decay=1e-4, momentum=0.9), 0.4)
    assert [g["weight_decay"] for g in opt.param_groups] == [1e-4, 1e-4, 0.0]
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["momentum"] == 0.9
    sched = LrSchedule(peak_lr=0.4, steps_per_epoch=10, epochs=4)
    lr = sched.apply(opt, 2, 0)
    assert lr == pytest.approx(0.4 * 0.5 * (1 + math.cos(math.pi * 2 / 4)))
    assert [g["lr"] for g in opt.param_groups] == [lr, 0.4, lr]


def test_each_method_sets_its_own_group_flags():
    simsiam = build_method("simsiam", SMALL, 32)
    flags = {g["name"]: g["fixed_lr"] for g in simsiam.param_groups()}
    assert flags == {"encoder": False, "predictor": True}  # fix_pred_lr (Table 1c)
    off = dataclasses.replace(SMALL, simsiam=dataclasses.replace(SMALL.simsiam,
                                                                 fix_pred_lr=False))
    assert not any(g["fixed_lr"] for g in build_method("simsiam", off, 32).param_groups())
    byol = build_method("byol", SMALL, 32)  # BYOL's predictor follows the schedule
    # and its biases and BN parameters are neither decayed nor LARS-adapted (SimCLR's too)
    assert {g["name"]: (g["fixed_lr"], g["no_weight_decay"]) for g in byol.param_groups()} == {
        "encoder": (False, False), "encoder_bias_bn": (False, True),
        "predictor": (False, False), "predictor_bias_bn": (False, True)}
    for g in byol.param_groups():
        assert all((p.ndim > 1) == (not g["no_weight_decay"]) for p in g["params"])
    simclr = build_method("simclr", SMALL, 32)
    assert [g["name"] for g in simclr.param_groups()] == ["encoder", "encoder_bias_bn"]
    swav = build_method("swav", SMALL, 32)  # SwAV's LARC decays and adapts everything
    assert not any(g["no_weight_decay"] for g in swav.param_groups())


def _sources(*parts: str) -> list[Path]:
    """The modules of each of ``parts`` (a package folder, or a module ``name.py``), those
    that exist (the command line is one ``cli.py`` or a ``cli/`` package)."""
    root = REPO / "src" / "simsiam"
    found = [p for part in parts for p in ((root / part).rglob("*.py") if (root / part).is_dir()
                                           else [root / part] if (root / part).is_file() else [])]
    assert found, parts
    return sorted(found)


def test_the_training_package_never_asks_which_method_runs():
    names = "|".join(METHODS)
    for path in (REPO / "src" / "simsiam" / "train").glob("*.py"):
        text = path.read_text()
        assert not re.search(r"\.method\s*(==|!=|in\b)", text), path.name
        assert not re.search(rf"[\"']({names})[\"']", text), path.name


def test_data_and_augment_never_ask_which_method_runs():
    """What a method needs from them comes from its card (view recipe, kind of batch and
    its options). The recipes are named after their authors (``augment.recipe: byol``):
    that table is the one place in augment/ that spells those names."""
    names = "|".join(METHODS)
    for path in _sources("data", "augment"):
        text = path.read_text()
        assert not re.search(r"\.method\s*(==|!=|in\b)", text), path
        assert not re.search(r"model\.(" + names + r")\b", text), path
        if path.name != "recipes.py":
            assert not re.search(rf"[\"']({names})[\"']", text), path


def test_data_imports_nothing_from_train():
    for path in (REPO / "src" / "simsiam" / "data").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert not (node.module or "").startswith("simsiam.train"), path.name


# ------------------------------------------------------------------ batches and run state

def test_a_view_batch_moves_its_views_and_keeps_its_indices():
    views = [torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)]
    batch = ViewBatch(views, torch.arange(4)).to(torch.device("cpu"), torch.channels_last)
    assert len(batch) == 4 and batch.inputs is batch.views
    assert batch.views[0].is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(batch.views[1], views[1]) and torch.equal(batch.index, torch.arange(4))


def test_run_state_round_trips_and_epoch_sums_resume_whole():
    state = RunState(epoch=2, step=17, batch_in_epoch=3, knn={0: 10.0, 2: 31.5},
                     probe_top1={2: 20.0}, epoch_loss={1: -0.2, 2: -0.4})
    sums = EpochSums(torch.device("cpu"))
    for loss in (0.5, 0.25, 0.125):
        sums.add(torch.tensor(loss), 16, torch.tensor(3))
    state.partial = sums.snapshot()
    again = RunState()
    again.load_state_dict(state.state_dict())
    assert again == state and again.partial["seen"] == 48
    resumed = EpochSums(torch.device("cpu"), partial=again.partial)
    resumed.add(torch.tensor(1.0), 16, torch.tensor(5))
    seen, loss_sum, hits = resumed.totals()
    assert (seen, loss_sum.item(), hits.item()) == (64, 1.875, 14)
    boundary = RunState(epoch=3, step=20)
    assert "partial" not in boundary.state_dict()


# --------------------------------------------------------------------------- checkpoints

def _parts():
    torch.manual_seed(0)
    model = build_method("simsiam", SMALL, 32)
    opt = build_optimizer(model.param_groups(), OptimConfig(), 0.1)
    model(ViewBatch([torch.randn(4, 3, 32, 32) for _ in range(2)], torch.arange(4)).inputs
          )[0].backward()
    opt.step()  # momentum buffers exist
    return model, opt


def test_checkpointer_writes_format_2_and_restores_everything(tmp_path):
    ctx = DistContext(device=torch.device("cpu"))
    model, opt = _parts()
    ck = Checkpointer(tmp_path, ctx, keep_every=2)
    assert ck.kept() == "no checkpoint was written yet"
    state = RunState(epoch=2, step=10, knn={2: 12.5})
    ck.save(state, model, opt, None, {"data": {"image_size": 32}}, torch.device("cpu"))
    raw = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert raw["format"] == FORMAT == 2 and (raw["epoch"], raw["step"]) == (2, 10)
    assert (tmp_path / "checkpoints" / "epoch_0002.pt").is_file()  # kept every 2 epochs
    assert ck.kept() == (f"the last good checkpoint, {ck.path} (epoch 2, step 10), is kept")

    fresh_model, fresh_opt = _parts()
    again, ck2 = RunState(), Checkpointer(tmp_path, ctx)
    ck2.restore(again, fresh_model, fresh_opt, None, torch.device("cpu"))
    assert again.step == 10 and again.knn == {2: 12.5} and ck2.last_saved == (2, 10)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 fresh_model.state_dict().values(),
                                                 strict=True))


def test_a_format_1_checkpoint_resumes_with_the_methods_flags_and_loads_for_eval(tmp_path):
    """simsiam 0.1 wrote the same fields without ``format`` and without group flags."""
    model, opt = _parts()
    old = {"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 1,
           "step": 5, "batch_in_epoch": 0, "torch_rng": torch.get_rng_state(),
           "config": {"data": {"image_size": 32}, "augment": {"normalize": "cifar10"},
                      "train": {"seed": 3}}, "knn": {}, "epoch_loss": {"1": -0.3},
           "probe_top1": {}}
    for g in old["optimizer"]["param_groups"]:
        del g["fixed_lr"], g["no_weight_decay"]
    save_checkpoint(old, tmp_path / "checkpoints" / "last.pt")
    fresh_model, fresh_opt = _parts()
    state = RunState()
    Checkpointer(tmp_path, DistContext(device=torch.device("cpu"))).restore(
        state, fresh_model, fresh_opt, None, torch.device("cpu"))
    assert (state.epoch, state.step, state.epoch_loss) == (1, 5, {1: -0.3})
    assert [g["fixed_lr"] for g in fresh_opt.param_groups] == [False, True]
    backbone, info = load_backbone_for_eval(tmp_path / "checkpoints" / "last.pt")
    assert (info["image_size"], info["normalize"], info["seed"]) == (32, "cifar10", 3)


def test_a_checkpoint_from_a_newer_version_is_refused_naming_its_format(tmp_path):
    save_checkpoint({"format": 7, "model": {}}, tmp_path / "checkpoints" / "last.pt")
    with pytest.raises(CheckpointError, match=r"checkpoint format 7, written by a newer "
                                              r"simsiam .* reads formats 1-2"):
        Checkpointer(tmp_path, DistContext(device=torch.device("cpu"))).load()


def test_nonfinite_guard_names_the_first_bad_step():
    guard = NonFiniteGuard(torch.device("cpu"), first_step=40)
    for loss in (1.0, 0.5, float("nan"), 0.3, float("inf")):
        guard.observe(torch.tensor(loss))
    with pytest.raises(FloatingPointError, match=r"NaN or infinite at step 43 \(epoch 5\)"):
        guard.check_loss(4, NullLogger(), "no checkpoint was written yet")
    model = nn.Linear(2, 2)
    guard.check_parameters(model, 45, 4, NullLogger(), "")  # finite: no error
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match=r"'weight'"):
        guard.check_parameters(model, 45, 4, NullLogger(), "")


def test_a_finished_row_of_version_0_1_is_recognised_by_reproduce(tmp_path):
    """reproduce/compare reuse a finished run whose config.yaml holds the same settings,
    also when simsiam 0.1 wrote it (flat model keys), and only then."""
    import yaml

    from simsiam.reproduce.runner import finished_run

    cfg = load_config("demo-cpu", {"data.source": "x", "train.out": str(tmp_path)})
    old = config_to_dict(cfg)
    flat = old["model"].pop("simsiam")
    old["optim"]["fix_pred_lr"] = flat.pop("fix_pred_lr")
    for name in ("simclr", "mocov2", "byol", "swav"):
        del old["model"][name]
    old["model"] |= flat | {"temperature": None, "ema_momentum": None, "queue_size": None,
                            "num_prototypes": 3000, "swav_queue_size": 0}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    (tmp_path / "backbone.safetensors").write_bytes(b"")
    assert finished_run(cfg)
    assert not finished_run(load_config("demo-cpu", {
        "data.source": "x", "train.out": str(tmp_path), "model.simsiam.dim": 512}))
    (tmp_path / "backbone.safetensors").unlink()
    assert not finished_run(cfg)  # not finished
