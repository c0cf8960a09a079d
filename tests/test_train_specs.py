"""The shipped experiment specs, the loss/routing settings, the learning-rate schedules and the data order."""

import math

import pytest
import torch
from test_train_support import spec_path

from moeisr.config import load_experiment
from moeisr.errors import UserError
from moeisr.train import build_model, lr_at, training_model_spec
from moeisr.train.sampler import StepBatchSampler, epoch_permutation

PAIRS = [("moeisr_liif", "liif"), ("moeisr_lte", "lte")]
PROFILES = ("smoke", "cpu", "paper")
DECODER_WIDTH = {"smoke": 16, "cpu": 256, "paper": 256}  # smoke: tiny decoders, so that its full-image decodes are fast


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize(("moe", "backbone"), PAIRS)
def test_moeisr_experts_keep_the_papers_widths_and_the_deepest_is_the_backbone_mlp(moe, backbone, profile):
    experiment = load_experiment(spec_path(moe), profile)
    moe_model, parent_model = build_model(experiment), build_model(experiment.parent)
    # the paper's decoder widths (smoke: tiny ones): experts as wide as the backbone's MLP, the deepest one that MLP
    hidden = moe_model.spec["args"]["experts"]
    assert all(w == DECODER_WIDTH[profile] for h in hidden for w in h)
    assert hidden[-1] == parent_model.spec["args"]["imnet_spec"]["args"]["hidden_list"]


def test_profiles_shrink_the_encoder_not_the_decoder_except_smoke():
    encoders = {p: load_experiment(spec_path("liif"), p).model.args["encoder_spec"]["args"] for p in PROFILES}
    assert (encoders["paper"]["n_resblocks"], encoders["paper"]["n_feats"]) == (16, 64)
    assert encoders["smoke"]["n_feats"] < encoders["cpu"]["n_feats"] < encoders["paper"]["n_feats"]
    for name in ("liif", "lte"):
        for profile in PROFILES:
            args = load_experiment(spec_path(name), profile).model.args
            assert set(args["imnet_spec"]["args"]["hidden_list"]) == {DECODER_WIDTH[profile]}
            if name == "lte":
                assert args["hidden_dim"] == DECODER_WIDTH[profile]  # LTE's estimators


def test_routing_training_settings_come_from_the_loss_section():
    experiment = load_experiment(spec_path("moeisr_liif"), "smoke", ["loss.tau=0.5", "loss.balance_weight=0.1"])
    routing = build_model(experiment).spec["args"]["routing"]
    assert (routing["tau"], routing["balance_weight"], routing["balance"]) == (0.5, 0.1, "switch")
    clash = load_experiment(spec_path("moeisr_liif"), "smoke", ["model.args.routing.tau=0.5"])
    with pytest.raises(UserError, match=r"model.args.routing.tau is a training setting; set loss.tau"):
        training_model_spec(clash)
    backbone = load_experiment(spec_path("liif"), "smoke", ["loss.balance_weight=0.01"])
    with pytest.raises(UserError, match="apply to MoEISR only"):
        training_model_spec(backbone)


def test_learning_rate_schedules():
    optim = load_experiment(
        spec_path("liif"),
        "smoke",
        ["optim.lr=1e-3", "optim.warmup_steps=4", "optim.max_steps=100", "optim.schedule.name=step"]
        + ["optim.schedule.milestones=[10, 50]", "optim.schedule.gamma=0.5"],
    ).optim
    assert [lr_at(optim, s) for s in range(4)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert [lr_at(optim, s) for s in (4, 9, 10, 49, 50, 99)] == pytest.approx([1e-3, 1e-3, 5e-4, 5e-4, 2.5e-4, 2.5e-4])
    cosine = load_experiment(
        spec_path("liif"),
        "smoke",
        ["optim.lr=1e-3", "optim.warmup_steps=10", "optim.max_steps=110", "optim.schedule.name=cosine"]
        + ["optim.schedule.min_lr=1e-5"],
    ).optim
    assert lr_at(cosine, 10) == pytest.approx(1e-3)
    assert lr_at(cosine, 60) == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(cosine, 110) == pytest.approx(1e-5)
    assert all(lr_at(cosine, s) >= lr_at(cosine, s + 1) for s in range(10, 110))


def test_data_order_is_a_function_of_seed_and_step_whatever_the_world_size():
    n, batch, seed = 23, 4, 7  # 5 steps per epoch, 3 samples dropped per epoch
    single = list(StepBatchSampler(n, batch, seed, start_step=0, max_steps=12))
    ranks = [list(StepBatchSampler(n, batch, seed, 0, 12, rank=r, world_size=2)) for r in range(2)]
    assert [a + b for a, b in zip(*ranks, strict=True)] == single
    # resuming at step 7 gives the same batches from there on
    assert list(StepBatchSampler(n, batch, seed, start_step=7, max_steps=12)) == single[7:]
    # each epoch draws distinct samples from its own permutation
    epoch0 = [key for step in single[:5] for key in step]
    assert {e for e, _ in epoch0} == {0} and len({i for _, i in epoch0}) == 20
    assert [i for _, i in epoch0] == epoch_permutation(n, seed, 0)[:20].tolist()
    assert single[5][0][0] == 1 and not torch.equal(epoch_permutation(n, seed, 0), epoch_permutation(n, seed, 1))
    with pytest.raises(UserError, match="divisible"):
        StepBatchSampler(n, 5, seed, 0, 1, rank=0, world_size=2)
    with pytest.raises(UserError, match="fewer than data.batch_size"):
        StepBatchSampler(3, 4, seed, 0, 1)
