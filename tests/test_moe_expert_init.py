"""prefix / prefix_lstsq expert initialisation on the bundled cpu LIIF: at step 0, under the training routing,
prefix_lstsq starts within 0.002 L1 of the backbone on held-out T91 patches (random cheap experts do not)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from moeisr.config import load_experiment
from moeisr.data.train import ImplicitDownsampled, TrainImages
from moeisr.errors import UserError
from moeisr.models.checkpoint import load_model
from moeisr.models.moe import init_from_backbone
from moeisr.models.moe.expert_init import decoder_inputs, init_experts_from_prefix
from moeisr.train import build_model
from moeisr.train.loop import TrainingObjective

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.data


def patches(sets, n, seed, inp_size):
    data = ImplicitDownsampled(TrainImages(sets), inp_size, 1, 4, augment=False, sample_q=256, seed=seed)
    items = [data[i] for i in range(n)]
    return {k: torch.stack([item[k] for item in items]) for k in items[0]}


def l1(model, batch) -> float:
    objective = TrainingObjective(model.train(), 1.0)
    with torch.no_grad():
        _, value, _ = objective(
            batch["inp"], batch["coord"], batch["cell"], batch["gt"], torch.Generator().manual_seed(0)
        )
    return float(value)


@pytest.fixture(scope="module")
def models():
    backbone = load_model(REPO / "results" / "checkpoints" / "liif.pt")
    experiment = load_experiment(REPO / "experiments" / "moeisr_liif.yaml", "cpu")
    fit = patches(["BSD200"], 16, seed=1, inp_size=32)  # training data; no HR is used by the fit
    inputs = decoder_inputs(backbone.eval(), [(fit["inp"], fit["coord"], fit["cell"])])
    out = {}
    for method in ("random", "prefix", "prefix_lstsq"):
        torch.manual_seed(0)
        moe = init_from_backbone(build_model(experiment), backbone)
        set_ = init_experts_from_prefix(moe, backbone, method, inputs if method == "prefix_lstsq" else None)
        out[method] = (moe, set_)
    return backbone, out


def test_prefix_lstsq_starts_within_0_002_l1_of_the_backbone_on_held_out_t91(models):
    backbone, out = models
    held_out = patches(["T91"], 16, seed=2, inp_size=16)  # T91 is not in the cpu training data
    reference = l1(backbone, held_out)
    lstsq, prefix, random = (l1(out[m][0], held_out) for m in ("prefix_lstsq", "prefix", "random"))
    assert out["prefix_lstsq"][1] == [0, 1, 2] and out["random"][1] == []
    assert abs(lstsq - reference) <= 0.002, (lstsq, reference)
    assert random - reference > 0.02 and prefix > lstsq  # random cheap experts start far off


def test_prefix_copies_the_first_hidden_layers(models):
    backbone, out = models
    moe = out["prefix"][0]
    source = [m for m in backbone.imnet.modules() if isinstance(m, torch.nn.Linear)]
    first = [m for m in moe.experts[0].modules() if isinstance(m, torch.nn.Linear)]
    assert torch.equal(first[0].weight, source[0].weight) and first[-1].out_features == 3


def test_unknown_methods_and_missing_fit_inputs_are_refused(models):
    backbone, out = models
    with pytest.raises(UserError, match="expert_init must be one of"):
        init_experts_from_prefix(out["random"][0], backbone, "lsq")
    with pytest.raises(UserError, match="needs decoder inputs"):
        init_experts_from_prefix(out["random"][0], backbone, "prefix_lstsq")


def test_the_init_knob_reaches_training_initialisation():
    from moeisr.train.loop import initialise_from_parent

    parent = REPO / "results" / "checkpoints" / "liif.pt"
    experiment = load_experiment(
        REPO / "experiments" / "moeisr_liif.yaml", "cpu", ["init.experts=prefix_lstsq", "init.fit_patches=8"]
    )
    torch.manual_seed(0)
    model = build_model(experiment)
    initialise_from_parent(model, parent, experiment)
    held_out = patches(["T91"], 8, seed=3, inp_size=16)
    assert abs(l1(model, held_out) - l1(load_model(parent), held_out)) < 0.005  # 8 fit patches: a looser bound
    assert experiment.config_hash != load_experiment(REPO / "experiments" / "moeisr_liif.yaml", "cpu").config_hash


def test_lte_with_four_experts_starts_from_its_backbone():
    lte = load_model(REPO / "results" / "checkpoints" / "lte.pt")
    experiment = load_experiment(REPO / "experiments" / "moeisr_lte.yaml", "cpu", ["model.args.experts=depth+linear"])
    moe = init_from_backbone(build_model(experiment), lte)
    assert moe.experts.hidden_lists == [[], [256], [256, 256], [256, 256, 256]]
    costs = moe.experts.relative_costs().tolist()
    assert costs == sorted(costs) and costs[0] < 0.05
    fit = patches(["BSD200"], 8, seed=1, inp_size=32)
    inputs = decoder_inputs(lte.eval(), [(fit["inp"], fit["coord"], fit["cell"])])
    assert init_experts_from_prefix(moe, lte, "prefix_lstsq", inputs) == [0, 1, 2]
    held_out = patches(["T91"], 8, seed=2, inp_size=16)
    assert abs(l1(moe, held_out) - l1(lte, held_out)) < 0.005
