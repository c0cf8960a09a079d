"""The recipe suite file (experiments/ablations/recipe.yaml) and its selection rule, without training anything.

The file: every knob row differs from its reference in exactly its factor's keys, every dense row starts from the
same checkpoint for the same budget as its MoEISR reference, the held-out split is T91's fixed crops at ×2 and ×4
(a benchmark or training set is refused), the issue's knobs are all there on both bases. The rule
(`moeisr.report.ablations.recipe.select`, docs/moeisr.md "Recipe v2: how it is chosen") on hand-made held-out
summaries: each of its clauses decides one case.
"""

import math

import pandas as pd
import pytest
from test_pipeline_support import write_suite

from moeisr.errors import UserError
from moeisr.pipeline.ablation_spec import (
    check_dense,
    check_heldout,
    check_row,
    expert_hidden_lists,
    factor_value,
    load_suite,
    row_experiment,
    spec_difference,
)
from moeisr.pipeline.ablations import estimate, grid_of
from moeisr.pipeline.reproduce import default_paths, load_experiments
from moeisr.report.ablations.recipe import select

RECIPE = "ablations/recipe.yaml"  # under experiments/
BASES = ("moeisr_liif", "moeisr_lte")


def _loaded(profile):
    paths = default_paths(profile)
    suite = load_suite(paths.experiments / RECIPE)
    main = load_experiments(paths, profile)
    spec = suite.profile(profile)
    # the profile's rows: under smoke (2 steps) a row such as liif-freeze200 (200 steps held) is refused when merged
    rows = {r.name: row_experiment(suite, r, spec, main, paths.experiments) for r in suite.select(spec)}
    return suite, main, rows


@pytest.fixture(scope="module", params=("smoke", "cpu"))
def loaded(request):
    return request.param, *_loaded(request.param)


def test_every_knob_row_differs_from_its_reference_in_exactly_its_factor(loaded):
    _, suite, _, rows = loaded
    for row in (r for r in suite.rows if r.name in rows):
        reference = rows[suite.reference_of(row).name]
        changed = spec_difference(rows[row.name], reference)
        if row.is_reference:
            assert changed == [], row.name
            continue
        keys = suite.factors[row.factor].keys
        assert changed and all(any(k == key or k.startswith(key + ".") for key in keys) for k in changed), row.name
        check_row(suite, row, rows[row.name], reference)


def test_each_base_has_one_dense_row_with_its_references_start_and_budget(loaded):
    profile, suite, main, rows = loaded
    budget = suite.profile(profile).budget["optim.max_steps"]
    for base in (b for b in BASES if suite.base_reference(b).name in rows):
        dense, reference = suite.dense_target(base), suite.base_reference(base)
        assert dense is not None and dense.is_reference and not dense.set
        experiment, moe = rows[dense.name], rows[reference.name]
        assert experiment.model.name != "moeisr" and moe.model.name == "moeisr"
        assert experiment.init_from == moe.init_from and experiment.parent is main[moe.init_from]
        assert experiment.optim == moe.optim and experiment.train == moe.train and experiment.data == moe.data
        assert experiment.optim.max_steps == budget
        check_dense(suite, dense, experiment, moe)
    if profile == "cpu":  # against a knob row's changed optim (the check's own failure)
        with pytest.raises(UserError, match=r"budget differs .* 'optim.freeze_encoder_steps'"):
            check_dense(suite, suite.dense_target(BASES[0]), rows["liif-equal"], rows["liif-freeze200"])
    with pytest.raises(UserError, match="the dense target must be dense"):
        check_dense(suite, suite.dense_target(BASES[0]), rows["liif-ref"], rows["liif-ref"])


def test_the_issue_knobs_are_covered_on_both_bases():
    suite, _, rows = _loaded("cpu")
    values: dict[tuple[str, str], set] = {}
    for row in suite.rows:
        if row.factor:
            values.setdefault((row.base, row.factor), set()).add(
                factor_value(suite.factors[row.factor], rows[row.name])
            )
    for base in BASES:
        assert values[(base, "init_experts")] == {"prefix", "prefix_lstsq"}
        assert values[(base, "expert_loss")] == {"0.5"} and values[(base, "noise_anneal")] == {"400"}
        assert values[(base, "cost_target")] == {"0.6"} and values[(base, "freeze_encoder")] == {"200"}
        assert len(values[(base, "lr_scale")]) == 2
    assert values[("moeisr_lte", "expert_family")] == {"depth+linear"}
    assert expert_hidden_lists(rows["lte-depth-linear"]) == [[], [256], [256, 256], [256, 256, 256]]  # 4 experts
    assert {rows[r.name].loss.args["cost_weight"] for r in suite.rows if r.factor == "cost_target"} == {1.0}
    assert suite.selection.combined_factor == "recipe" and not [r for r in suite.rows if r.factor == "recipe"]
    for name, factor in suite.factors.items():  # the combination may change every knob's keys, and nothing else
        if name != "recipe":
            assert set(factor.keys) <= set(suite.factors["recipe"].keys), name


def test_the_held_out_split_is_t91_crops_at_x2_and_x4_validated_at_the_last_step():
    suite, _, rows = _loaded("cpu")
    split = check_heldout(suite, rows, suite.profile("cpu"))
    assert split == {"set": "T91", "scales": [2.0, 4.0], "crop": 72, "limit": None}
    for experiment in rows.values():
        assert experiment.data.train_sets == ["BSD200"]
        assert experiment.train.val_every == experiment.optim.max_steps == 800  # once, at the end
    selection = suite.selection
    assert (selection.min_gain_db, selection.min_saved_pct, selection.tolerance_db) == (0.02, 30.0, 0.05)


@pytest.mark.data
def test_the_cpu_plan_counts_every_row_and_the_held_out_passes():
    paths = default_paths("cpu")
    suite = load_suite(paths.experiments / RECIPE)
    profile = suite.profile("cpu")
    main = load_experiments(paths, "cpu")
    rows = suite.select(profile)
    assert len(rows) == len(suite.rows) == 21
    experiments = {r.name: row_experiment(suite, r, profile, main, paths.experiments) for r in rows}
    plan = estimate(rows, experiments, profile, grid_of(profile), main, check_heldout(suite, experiments, profile))
    assert plan["sweep"] == 0 and 0 < plan["heldout"] < plan["eval"] < plan["train"]
    assert plan["total"] == pytest.approx(plan["train"] + plan["eval"] + plan["heldout"])


def test_selection_brings_the_reference_and_the_dense_row():
    suite = load_suite(default_paths("cpu").experiments / RECIPE)
    chosen = suite.select(suite.profile("cpu"), ["lte-anneal400"])
    assert [r.name for r in chosen] == ["lte-ref", "lte-anneal400", "lte-equal"]


GOOD = """
factors:
  tau: {label: tau, keys: [loss.tau]}
rows:
  - {name: ref, base: moeisr_liif}
  - {name: hot, base: moeisr_liif, factor: tau, set: {loss.tau: 5.0}}
  - {name: equal, base: liif_equal, dense_for: moeisr_liif}
selection: {min_gain_db: 0.02, min_saved_pct: 30, tolerance_db: 0.05}
profiles:
  smoke:
    budget: {optim.max_steps: 2, data.val_set: T91, data.val_scales: [2, 4], data.val_crop: 48}
    grid: {sets: [Set5], scales: [2]}
"""


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("dense_for: moeisr_liif", "dense_for: moeisr_lite", r"not the base of a row \(did you mean 'moeisr_liif'\?\)"),
        ("base: liif_equal, dense_for", "base: liif_equal, factor: tau, dense_for", "has no factor"),
        ("{name: equal, base: liif_equal, dense_for: moeisr_liif}",
         "{name: equal, base: liif_equal, dense_for: moeisr_liif}\n  - {name: equal2, base: lte_equal, dense_for: "
         "moeisr_liif}", "more than one dense row"),
        ("min_saved_pct: 30", "min_saved_pct: 130", "below 100"),
        ("tolerance_db: 0.05}", "tolerance_db: 0.05, combined_factor: taus}", r"unknown factor 'taus'"),
        ("min_gain_db: 0.02", "min_gain: 0.02", r"unknown key 'min_gain' \(did you mean 'min_gain_db'\?\)"),
    ],
)  # fmt: skip
def test_bad_recipe_files_give_one_line_errors(tmp_path, old, new, message):
    assert old in GOOD
    with pytest.raises(UserError, match=message) as info:
        load_suite(write_suite(tmp_path, GOOD.replace(old, new), "recipe.yaml"))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("val_set", "message"),
    [("Set14", "is a benchmark set"), ("BSD200", "one of the rows' training sets"), ("null", "needs a held-out split")],
)
def test_a_benchmark_or_training_set_never_chooses_a_recipe(tmp_path, val_set, message):
    paths = default_paths("smoke")
    main = load_experiments(paths, "smoke")
    suite = load_suite(
        write_suite(tmp_path, GOOD.replace("data.val_set: T91", f"data.val_set: {val_set}"), "recipe.yaml")
    )
    spec = suite.profile("smoke")
    rows = {r.name: row_experiment(suite, r, spec, main, paths.experiments) for r in suite.rows}
    with pytest.raises(UserError, match=message):
        check_heldout(suite, rows, spec)


def test_every_row_validates_on_the_same_held_out_crops(tmp_path):
    paths = default_paths("smoke")
    main = load_experiments(paths, "smoke")
    text = GOOD.replace("tau: {label: tau, keys: [loss.tau]}", "tau: {label: tau, keys: [loss.tau, data.val_crop]}")
    suite = load_suite(
        write_suite(tmp_path, text.replace("{loss.tau: 5.0}", "{loss.tau: 5.0, data.val_crop: 24}"), "recipe.yaml")
    )
    spec = suite.profile("smoke")
    rows = {r.name: row_experiment(suite, r, spec, main, paths.experiments) for r in suite.rows}
    with pytest.raises(UserError, match="rows 'ref' and 'hot' validate on different held-out splits"):
        check_heldout(suite, rows, spec)


# ------------------------------------------------------------------------------------------- the rule

RULE = {"min_gain_db": 0.02, "min_saved_pct": 30.0, "tolerance_db": 0.05, "combined_factor": "recipe"}


def _case(rows, rule=RULE):
    """(summary, meta) of hand-made held-out numbers: rows = [(name, factor or None, psnr, saved_pct, set)]."""
    meta_rows, lines = [], []
    for name, factor, psnr, saved, changes in rows:
        meta_rows.append({"row": name, "base": "moeisr_liif", "reference": "ref", "factor": factor,
                          "dense_for": None, "set": changes})  # fmt: skip
        lines.append({"row": name, "base": "moeisr_liif", "factor": factor, "factor_label": factor, "value": name,
                      "reference": "ref", "dense_for": None, "psnr": psnr, "saved_pct": saved,
                      "d_psnr_ref": psnr - rows[0][2]})  # fmt: skip
    meta_rows.append({"row": "equal", "base": "liif_equal", "reference": "equal", "factor": None,
                      "dense_for": "moeisr_liif", "set": {}})  # fmt: skip
    lines.append({"row": "equal", "base": "liif_equal", "factor": None, "factor_label": None, "value": "",
                  "reference": "equal", "dense_for": "moeisr_liif", "psnr": 30.0, "saved_pct": math.nan,
                  "d_psnr_ref": 0.0})  # fmt: skip
    return pd.DataFrame(lines), {"rows": meta_rows, "selection": rule}


def test_rule_keeps_a_better_admissible_value_and_refuses_the_rest():
    summary, meta = _case([
        ("ref", None, 30.00, 35.0, {}),
        ("prefix", "init", 30.03, 36.0, {"init.experts": "prefix"}),
        ("lstsq", "init", 30.10, 34.0, {"init.experts": "prefix_lstsq"}),
        ("cheap", "rho", 30.30, 20.0, {"loss.args.cost_target": 0.5}),  # better but saves too little
        ("small", "anneal", 30.01, 40.0, {"loss.args.noise_anneal_steps": 400}),  # below the +0.02 dB floor
    ])  # fmt: skip
    decisions, recipes = select(summary, meta)
    d = decisions.set_index("row")
    assert d.loc["lstsq", "winner"] and d.loc["prefix", "passes"] and not d.loc["prefix", "winner"]
    assert not d.loc["cheap", "admissible"] and not d.loc["small", "passes"]
    (recipe,) = recipes
    assert recipe["status"] == "one knob" and recipe["chosen"] == "lstsq"
    assert recipe["set"] == {"init.experts": "prefix_lstsq"}


def test_rule_ties_go_to_the_larger_saving_then_the_first_listed():
    summary, meta = _case([
        ("ref", None, 30.00, 35.0, {}),
        ("a", "lr", 30.10, 35.0, {"optim.lr_scale.mapper": 4.0}),
        ("b", "lr", 30.09, 38.0, {"optim.lr_scale.mapper": 2.0}),  # within 0.02 dB of the best, saves more
        ("c", "lr", 30.085, 38.0, {"optim.lr_scale.experts": 2.0}),  # the same saving, listed after b
    ])  # fmt: skip
    decisions, recipes = select(summary, meta)
    assert list(decisions.loc[decisions["winner"], "row"]) == ["b"] and recipes[0]["chosen"] == "b"


def test_rule_with_a_reference_below_the_cost_floor_allows_the_targets_tolerance():
    summary, meta = _case([
        ("ref", None, 30.00, 25.0, {}),  # v1 saves too little
        ("rho", "rho", 29.96, 40.0, {"loss.args.cost_target": 0.6}),  # reaches the floor, loses 0.04 dB <= 0.05
        ("rho2", "rho", 29.90, 50.0, {"loss.args.cost_target": 0.5}),  # loses 0.10 dB: too much
        ("init", "init", 30.20, 26.0, {"init.experts": "prefix"}),  # better, still below the floor
    ])  # fmt: skip
    decisions, recipes = select(summary, meta)
    d = decisions.set_index("row")
    assert d.loc["rho", "winner"] and not d.loc["rho2", "passes"] and not d.loc["init", "admissible"]
    assert recipes[0]["reference_admissible"] is False and recipes[0]["chosen"] == "rho"


def test_rule_without_a_winner_keeps_v1():
    summary, meta = _case([("ref", None, 30.0, 35.0, {}), ("x", "init", 29.0, 50.0, {"init.experts": "prefix"})])
    _, recipes = select(summary, meta)
    assert recipes[0]["status"] == "v1" and recipes[0]["chosen"] == "ref" and recipes[0]["set"] == {}


@pytest.mark.parametrize(("combo_psnr", "status", "chosen"), [
    (None, "combined, untested", None),
    (30.12, "combined, confirmed", "both"),
    (30.05, "combined, refused", "lstsq"),  # passes against the reference, but 0.05 dB below the best single knob
])  # fmt: skip
def test_rule_with_two_winners_needs_the_combination_trained(combo_psnr, status, chosen):
    rows = [
        ("ref", None, 30.00, 35.0, {}),
        ("lstsq", "init", 30.10, 35.0, {"init.experts": "prefix_lstsq"}),
        ("anneal", "anneal", 30.05, 36.0, {"loss.args.noise_anneal_steps": 400}),
    ]
    both = {"init.experts": "prefix_lstsq", "loss.args.noise_anneal_steps": 400}
    if combo_psnr is not None:
        rows.append(("both", "recipe", combo_psnr, 35.0, both))
    summary, meta = _case(rows)
    decisions, (recipe,) = select(summary, meta)
    assert "both" not in set(decisions["row"])  # the combination is no knob
    assert recipe["set"] == both and recipe["fallback"] == "lstsq"
    assert (recipe["status"], recipe["chosen"]) == (status, chosen)


def test_every_recipe_row_starts_from_a_converged_backbone_and_the_main_suite_stays_put(loaded):
    profile, suite, main, rows = loaded
    assert suite.parents == {"liif": "liif_converged", "lte": "lte_converged"}
    for name, experiment in rows.items():
        base = suite.row(name).base
        assert main[base].init_from in ("liif", "lte"), base  # the base file itself starts from the 6000-step one
        assert experiment.init_from == suite.parents[main[base].init_from], name
        assert experiment.config_hash != main[base].config_hash  # another start, another hash: nothing reused
    paths = default_paths(profile)
    ablations = load_suite(paths.experiments / "ablations" / "ablations.yaml")
    assert ablations.parents == {}
    spec = ablations.profile(profile)
    row = next(iter(ablations.select(spec)))
    assert row_experiment(ablations, row, spec, main, paths.experiments).init_from in ("liif", "lte")


def test_parents_must_map_names_to_other_names(tmp_path):
    text = (default_paths("smoke").experiments / RECIPE).read_text()
    for bad in ("parents: [liif]", "parents: {liif: liif}", "parents: {liif: 3}"):
        path = tmp_path / "recipe.yaml"
        path.write_text(text.replace("parents: {liif: liif_converged, lte: lte_converged}", bad))
        with pytest.raises(UserError, match="'parents' must map"):
            load_suite(path)
