"""The reproduced experiments: equal-budget controls train exactly as long as MoEISR, the bundle stays small,
the large-scale grid picks only large images, the seed replicas differ from their experiment by the seed alone."""

import pytest

from moeisr.config import load_experiment
from moeisr.data.benchmark import list_images
from moeisr.data.images import image_size
from moeisr.errors import UserError
from moeisr.evaluate.runner import Grid
from moeisr.pipeline.reproduce import (
    BUNDLE_LIMIT_MB,
    MIN_LR_SIDE,
    ROLES,
    SEED_BUNDLE_LIMIT_MB,
    SEED_ROLES,
    _selected_roles,
    crop_models,
    default_paths,
    large_scale_grid,
    load_experiments,
    seed_grid,
)
from moeisr.report.tables import MODEL_ORDER
from moeisr.train import build_model

PROFILES = ("smoke", "cpu", "paper")
CONTROLS = [  # (equal-budget control, MoEISR fine-tune, the backbone both start from): recipe v1, then v2
    ("liif_equal", "moeisr_liif", "liif"),
    ("lte_equal", "moeisr_lte", "lte"),
    ("liif_equal_v2", "moeisr_liif_v2", "liif_converged"),
    ("lte_equal_v2", "moeisr_lte_v2", "lte_converged"),
]


def _experiment(name, profile):
    return load_experiment(default_paths(profile).experiments / f"{name}.yaml", profile)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize(("control", "moe", "backbone"), CONTROLS)
def test_equal_budget_backbone_trains_exactly_like_the_moeisr_fine_tune(control, moe, backbone, profile):
    equal, fine_tune, parent = _experiment(control, profile), _experiment(moe, profile), _experiment(backbone, profile)
    # same starting point, same extra steps, schedule, optimiser, data and data order
    assert equal.init_from == fine_tune.init_from == backbone
    assert equal.optim == fine_tune.optim
    assert equal.optim.max_steps == fine_tune.optim.max_steps
    assert equal.data == fine_tune.data
    assert equal.train.seed == fine_tune.train.seed and equal.train.deterministic == fine_tune.train.deterministic
    assert equal.loss.l1 == fine_tune.loss.l1 and equal.loss.balance_weight == 0
    assert equal.config_hash not in (parent.config_hash, fine_tune.config_hash)


def test_roles_cover_every_model_of_the_tables_parents_first():
    evaluated = {r.model for r in ROLES if r.evaluated} | {"bicubic"}
    assert evaluated == set(MODEL_ORDER)  # every model the tables know is reproduced, and the tables place each
    experiments = load_experiments(default_paths("smoke"), "smoke")
    seen = set()
    for role in ROLES:
        experiment = experiments[role.experiment]
        assert experiment.init_from is None or experiment.init_from in seen
        seen.add(role.experiment)


def test_overrides_reach_the_parent_hash_of_fine_tunes():
    paths = default_paths("smoke")
    plain = load_experiments(paths, "smoke")
    changed = load_experiments(paths, "smoke", ["optim.max_steps=7"])
    assert changed["moeisr_liif"].parent is changed["liif"]
    assert changed["liif_equal"].config_hash != plain["liif_equal"].config_hash
    assert changed["liif"].optim.max_steps == changed["moeisr_liif"].optim.max_steps == 7


def test_cpu_bundle_of_the_six_models_stays_under_its_budget():
    experiments = load_experiments(default_paths("cpu"), "cpu")
    total = 0
    for experiment in experiments.values():
        state = build_model(experiment).state_dict()
        total += sum(t.numel() * t.element_size() for t in state.values())
    assert total / 1e6 < BUNDLE_LIMIT_MB["cpu"] * 0.9  # weights; the checkpoint container adds a few kB per file


def test_large_scales_only_on_sets_whose_images_keep_a_usable_lr(monkeypatch, shared_data):
    monkeypatch.setenv("MOEISR_DATA", str(shared_data))
    grid = Grid(sets=["Set5", "B100", "Urban100"], scales=[2.0, 4.0], limit={"B100": 2, "Urban100": 3})
    large, skipped = large_scale_grid(grid, [18, 24, 30])
    assert large is not None and large.sets == ["Urban100"] and skipped == ["Set5", "B100"]
    assert large.scales == [18.0, 24.0, 30.0] and large.limit == {"Urban100": 3}
    assert all(min(image_size(p)) >= MIN_LR_SIDE * 30 for p in list_images("Urban100", limit=3))
    # scales already in the main grid are not repeated
    again, _ = large_scale_grid(grid, [4, 30])
    assert again.scales == [30.0]
    assert large_scale_grid(grid, []) == (None, [])


def test_seed_replicas_differ_from_their_experiment_by_the_seed_only():
    paths = default_paths("smoke")
    roles = (*ROLES, *SEED_ROLES)
    experiments = load_experiments(paths, "smoke", ["optim.max_steps=7"], roles)
    assert {r.experiment for r in SEED_ROLES} == {"moeisr_liif_v2", "moeisr_lte_v2", "liif_equal_v2", "lte_equal_v2"}
    assert {r.seed for r in SEED_ROLES} == {1, 2}
    hashes = set()
    for role in SEED_ROLES:
        replica, main = experiments[role.name], experiments[role.experiment]
        assert role.name == f"{role.experiment}_seed{role.seed}" and replica.name == role.name
        assert role.model == f"{next(r.model for r in ROLES if r.experiment == role.experiment)}-seed{role.seed}"
        assert replica.train.seed == role.seed != main.train.seed
        assert replica.parent is main.parent  # the same (overridden) parent: the same parent bundle
        assert replica.optim == main.optim and replica.optim.max_steps == 7 and replica.model == main.model
        hashes.add(replica.config_hash)
    assert len(hashes) == len(SEED_ROLES) and not hashes & {e.config_hash for e in experiments.values() if
                                                             e.name in {r.name for r in ROLES}}  # fmt: skip
    with pytest.raises(UserError, match="would repeat the experiment"):  # a replica of the spec's own seed
        load_experiments(paths, "smoke", ["train.seed=1"], roles)


def test_models_selects_seed_replicas_with_their_parents_only_with_seeds():
    paths = default_paths("smoke")
    roles = (*ROLES, *SEED_ROLES)
    experiments = load_experiments(paths, "smoke", (), roles)
    selected, bicubic = _selected_roles(["moeisr-lte-v2-seed2"], experiments, roles)
    assert [r.name for r in selected] == ["lte", "lte_converged", "moeisr_lte_v2_seed2"] and not bicubic
    with pytest.raises(UserError, match="seed replicas are left out with --no-seeds"):
        _selected_roles(["moeisr-lte-v2-seed2"], load_experiments(paths, "smoke"))


def test_seed_grid_keeps_the_scales_up_to_x4_at_the_default_setting():
    grid = Grid(sets=["Set5", "B100"], scales=[2.0, 3.0, 4.0, 6.0, 12.0], knobs=[None, 0.5], limit={"B100": 25})
    seeds = seed_grid(grid)
    assert (seeds.sets, seeds.scales, seeds.knobs, seeds.limit) == (["Set5", "B100"], [2.0, 3.0, 4.0], [None],
                                                                    {"B100": 25})  # fmt: skip
    assert seed_grid(Grid(sets=["Set5"], scales=[6.0])) is None


def test_cpu_bundle_of_the_seed_replicas_stays_under_its_budget():
    experiments = load_experiments(default_paths("cpu"), "cpu", (), (*ROLES, *SEED_ROLES))
    total = 0
    for role in SEED_ROLES:
        state = build_model(experiments[role.name]).state_dict()
        total += sum(t.numel() * t.element_size() for t in state.values())
    assert total / 1e6 < SEED_BUNDLE_LIMIT_MB["cpu"] * 0.98  # weights; the checkpoint container adds a few kB per file


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("backbone", ["liif", "lte"])
def test_the_v2_equal_budget_controls_are_the_v1_controls_from_the_converged_backbones(backbone, profile):
    v1, v2 = _experiment(f"{backbone}_equal", profile), _experiment(f"{backbone}_equal_v2", profile)
    assert v2.init_from == f"{backbone}_converged" and v2.parent.model == v1.parent.model
    differ = {k for k, v in v2.to_dict().items() if v1.to_dict().get(k) != v}
    assert differ == {"name", "description", "init_from"}  # the budget, data, seed and model are v1's


def test_the_qualitative_crops_show_recipe_v2_once_both_its_models_are_evaluated():
    v1 = {"liif", "moeisr-liif", "lte", "moeisr-lte"}
    assert crop_models(v1) == {"LIIF": "liif", "MoEISR-LIIF": "moeisr-liif", "LTE": "lte", "MoEISR-LTE": "moeisr-lte"}
    both = crop_models(v1 | {"liif-converged", "moeisr-liif-v2", "lte-converged"})  # LTE's v2 MoEISR not yet
    assert both == {"LIIF": "liif-converged", "MoEISR-LIIF": "moeisr-liif-v2", "LTE": "lte", "MoEISR-LTE": "moeisr-lte"}
    assert crop_models({"liif"}) == {}
