"""Per-module learning rates and encoder freezing: the recipe knobs optim.lr_scale and optim.freeze_encoder_steps,
on the cpu MoEISR-LIIF fine-tuned from the bundled LIIF."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from moeisr.config import load_experiment
from moeisr.errors import UserError
from moeisr.models.checkpoint import load_model
from moeisr.train import build_model, train
from moeisr.train.schedules import LRSchedule, module_group, param_groups

REPO = Path(__file__).resolve().parents[1]
SPEC = REPO / "experiments" / "moeisr_liif.yaml"


def test_every_parameter_lands_in_its_module_group():
    model = build_model(load_experiment(SPEC, "cpu"))
    groups = {module_group(n) for n, _ in model.named_parameters()}
    assert groups == {"encoder", "mapper", "experts"}
    assert module_group("backbone.encoder.head.0.weight") == "encoder"
    assert module_group("imnet.layers.0.weight") == module_group("experts.experts.2.layers.0.weight") == "experts"
    lte = build_model(load_experiment(REPO / "experiments" / "lte.yaml", "cpu"))
    assert "other" in {module_group(n) for n, _ in lte.named_parameters()}  # LTE's coef/freq/phase estimators


def test_one_group_by_default_and_scaled_groups_when_asked():
    default = load_experiment(SPEC, "cpu")
    assert [g["group"] for g in param_groups(build_model(default), default.optim)] == ["all"]
    asked = load_experiment(SPEC, "cpu", ["optim.lr_scale={encoder: 0.1, mapper: 2.0}", "optim.freeze_encoder_steps=5"])
    model = build_model(asked)
    optimizer = torch.optim.Adam(param_groups(model, asked.optim), lr=asked.optim.lr)
    schedule = LRSchedule(optimizer, asked.optim)
    lr = schedule.apply(2)
    by_group = {g["group"]: g["lr"] for g in optimizer.param_groups}
    assert by_group == pytest.approx({"encoder": 0.0, "mapper": 2 * lr, "experts": lr})  # frozen for 5 steps
    schedule.apply(asked.optim.warmup_steps + 10)
    assert {g["group"]: g["lr"] / schedule.lr for g in optimizer.param_groups}["encoder"] == pytest.approx(0.1)
    with pytest.raises(UserError, match="optim.lr_scale"):
        load_experiment(SPEC, "cpu", ["optim.lr_scale={decoder: 0.5}"])


@pytest.mark.slow
def test_a_frozen_encoder_does_not_move_while_the_mapper_learns(tmp_path):
    overrides = ["optim.max_steps=2", "optim.warmup_steps=0", "optim.freeze_encoder_steps=2", "data.val_set=null",
                 "data.batch_size=2", "data.sample_q=128"]  # fmt: skip
    experiment = load_experiment(SPEC, "cpu", overrides)
    parent = REPO / "results" / "checkpoints" / "liif.pt"
    final = train(experiment, tmp_path / "run", progress=False, init=parent)
    trained, backbone = load_model(final), load_model(parent)
    encoder = {k: v for k, v in trained.backbone.state_dict().items() if k.startswith("encoder.")}
    assert encoder and all(torch.equal(v, backbone.state_dict()[k]) for k, v in encoder.items())
    torch.manual_seed(0)
    fresh = build_model(experiment)
    assert not torch.equal(trained.mapper.state_dict()["body.0.weight"], fresh.mapper.state_dict()["body.0.weight"])
