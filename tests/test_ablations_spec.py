"""The ablation suite file: every row differs from its reference in exactly its factor, all rows share one starting
point and one budget, the issue's factors are all there, the cpu plan fits its time budget, bad files are refused
with one-line errors."""

import pytest
from test_pipeline_support import write_suite

from moeisr.cli import main
from moeisr.errors import UserError
from moeisr.flops.closed_form import mlp_macs
from moeisr.pipeline.ablation_spec import (
    SUITE_FILE,
    check_row,
    expert_hidden_lists,
    factor_value,
    load_suite,
    row_experiment,
    spec_difference,
)
from moeisr.pipeline.ablations import all_experts_cost, estimate, grid_of
from moeisr.pipeline.reproduce import default_paths, load_experiments

PROFILES = ("smoke", "cpu", "paper")
CPU_HOURS = 8.0


def _loaded(profile):
    paths = default_paths(profile)
    suite = load_suite(paths.experiments / SUITE_FILE)
    main = load_experiments(paths, profile)
    rows = {r.name: row_experiment(suite, r, suite.profile(profile), main, paths.experiments) for r in suite.rows}
    return suite, main, rows


@pytest.fixture(scope="module", params=PROFILES)
def loaded(request):
    return request.param, *_loaded(request.param)


def test_every_row_differs_from_its_reference_in_exactly_its_factor(loaded):
    _, suite, _, rows = loaded
    for row in suite.rows:
        reference = rows[suite.reference_of(row).name]
        changed = spec_difference(rows[row.name], reference)
        if row.is_reference:
            assert changed == []
            continue
        keys = suite.factors[row.factor].keys
        assert changed, row.name
        assert all(any(k == key or k.startswith(key + ".") for key in keys) for k in changed), (row.name, changed)
        check_row(suite, row, rows[row.name], reference)  # the loader's own check agrees


def test_rows_start_from_the_main_backbone_with_one_budget_shorter_than_the_main_model(loaded):
    profile, suite, main, rows = loaded
    budget = suite.profile(profile).budget["optim.max_steps"]
    for row in suite.rows:
        experiment, base = rows[row.name], main[row.base]
        assert experiment.init_from == base.init_from and experiment.parent is main[base.init_from]
        assert experiment.optim.max_steps == budget
        assert experiment.optim == rows[suite.reference_of(row).name].optim  # the reference trains alike
        assert experiment.data == rows[suite.reference_of(row).name].data
        assert experiment.name == row.name and experiment.config_hash != base.config_hash
    if profile != "smoke":
        assert budget < min(main[r.base].optim.max_steps for r in suite.rows)


def test_the_issue_factors_are_covered_with_the_stated_values():
    suite, _, rows = _loaded("cpu")
    values: dict[tuple[str, str], set] = {}
    for row in suite.rows:
        for name, factor in suite.factors.items():
            if row.is_reference or row.factor == name:
                values.setdefault((row.base, name), set()).add(factor_value(factor, rows[row.name]))
    liif, lte = "moeisr_liif", "moeisr_lte"
    assert values[(liif, "mapper_depth")] == {"1", "3", "5"} and values[(lte, "mapper_depth")] == {"1", "3", "5"}
    assert values[(liif, "tau")] == {"0.5", "1", "5"} and values[(lte, "tau")] == {"0.5", "1", "5"}
    assert values[(liif, "n_experts")] == {"2", "3", "4"}
    assert values[(liif, "expert_family")] == {"depth", "width"}
    reference = rows["liif-ref"].loss.balance_weight
    assert {rows[r.name].loss.balance_weight for r in suite.rows if r.factor == "balance_weight"} == {
        0.0,
        10 * reference,
    }


def test_every_row_keeps_the_backbone_mlp_as_its_costliest_expert():
    _, _, rows = _loaded("cpu")
    in_dim = 292  # LIIF's MLP input with the cpu encoder (32 · 9 + 4); the cost order holds for any input width
    for name, experiment in rows.items():
        hidden = expert_hidden_lists(experiment)
        backbone = experiment.model.args["backbone_spec"]["args"]["imnet_spec"]["args"]["hidden_list"]
        costs = [mlp_macs(in_dim, h) for h in hidden]
        assert hidden[costs.index(max(costs))] == backbone, name  # init_from_backbone copies the MLP into it
    width, depth = expert_hidden_lists(rows["liif-width"]), expert_hidden_lists(rows["liif-ref"])
    assert max(mlp_macs(in_dim, h) for h in width) == max(mlp_macs(in_dim, h) for h in depth)  # matched maximum
    assert len(width) == len(depth) == 4 and min(map(len, width)) == 4  # width family: LIIF's depth throughout


@pytest.mark.data
def test_the_cpu_plan_fits_the_time_budget():
    paths = default_paths("cpu")
    suite = load_suite(paths.experiments / SUITE_FILE)
    profile = suite.profile("cpu")
    main = load_experiments(paths, "cpu")
    rows = suite.select(profile)
    assert len(rows) == len(suite.rows) == 17
    experiments = {r.name: row_experiment(suite, r, profile, main, paths.experiments) for r in rows}
    plan = estimate(rows, experiments, profile, grid_of(profile), main)
    assert plan["total"] <= CPU_HOURS * 3600 and plan["train"] > plan["eval"]
    # the all-experts decode of each sweep model, from its experts' MAC counts (LIIF's depth family costs more)
    liif, lte = all_experts_cost(main["moeisr_liif"]), all_experts_cost(main["moeisr_lte"])
    assert 2.0 < liif < 3.0 and 1.5 < lte < liif


def test_row_selection_brings_the_references():
    suite = load_suite(default_paths("cpu").experiments / SUITE_FILE)
    chosen = suite.select(suite.profile("cpu"), ["lte-tau5", "liif-j2"])
    assert [r.name for r in chosen] == ["liif-ref", "liif-j2", "lte-ref", "lte-tau5"]
    with pytest.raises(UserError, match="did you mean 'liif-tau5'"):
        suite.select(suite.profile("cpu"), ["liif-tua5"])


GOOD = """
factors:
  tau: {label: tau, keys: [loss.tau]}
rows:
  - {name: ref, base: moeisr_liif}
  - {name: hot, base: moeisr_liif, factor: tau, set: {loss.tau: 5.0}}
profiles:
  smoke:
    budget: {optim.max_steps: 2}
    grid: {sets: [Set5], scales: [2]}
    sweep: {models: [moeisr_liif], points: 7}
"""


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("factor: tau, set:", "factor: tau, sett:", r"unknown key 'sett' \(did you mean 'set'\?\)"),
        ("factor: tau,", "factor: taus,", r"unknown factor 'taus' \(did you mean 'tau'\?\)"),
        ("{loss.tau: 5.0}", "{loss.tau: 5.0, optim.lr: 1.0}", "'optim.lr' is not a key of factor 'tau'"),
        ("{name: ref, base: moeisr_liif}", "{name: ref, base: moeisr_liif, set: {loss.tau: 2.0}}", "must not set"),
        ("name: hot", "name: ref", "duplicate row name"),
        ("budget: {optim.max_steps: 2}", "budget: {optim.max_steps: 2, loss.tau: 3.0}", "not a budget key"),
        ("budget: {optim.max_steps: 2}", "budget: {optim.lr: 2}", "must set optim.max_steps"),
        ("points: 7", "points: 5", "integer >= 7"),
        ("grid: {sets", "grids: {sets", r"unknown key 'grids' \(did you mean 'grid'\?\)"),
        ("label: tau,", "lable: tau,", r"unknown key 'lable' \(did you mean 'label'\?\)"),
    ],
)
def test_bad_suite_files_give_one_line_errors_with_a_suggestion(tmp_path, old, new, message):
    assert old in GOOD
    with pytest.raises(UserError, match=message) as info:
        load_suite(write_suite(tmp_path, GOOD.replace(old, new)))
    assert "\n" not in str(info.value)


def test_bad_spec_keys_in_a_row_are_refused_when_merged(tmp_path):
    paths = default_paths("smoke")
    main = load_experiments(paths, "smoke")
    typo = GOOD.replace("{loss.tau: 5.0}", "{loss.tua: 5.0}").replace("[loss.tau]", "[loss]")
    suite = load_suite(write_suite(tmp_path, typo))
    with pytest.raises(UserError, match=r"row 'hot'.*unknown key 'loss.tua' \(did you mean 'loss.tau'\?\)"):
        row_experiment(suite, suite.row("hot"), suite.profile("smoke"), main, paths.experiments)
    # a row that, merged, equals its reference is refused before anything trains
    same = load_suite(write_suite(tmp_path, GOOD.replace("{loss.tau: 5.0}", "{loss.tau: 1.0}")))
    rows = {r.name: row_experiment(same, r, same.profile("smoke"), main, paths.experiments) for r in same.rows}
    with pytest.raises(UserError, match="equals its reference 'ref'"):
        check_row(same, same.row("hot"), rows["hot"], rows["ref"])


@pytest.mark.data
def test_cli_plan_and_unknown_rows(capsys):
    assert main(["ablations", "--profile", "smoke", "--plan", "--rows", "liif-tau5", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "2 rows (liif-ref, liif-tau5)" in out and "expected from scratch" in out
    assert main(["ablations", "--profile", "smoke", "--plan", "--rows", "liif-tau50"]) == 2
    assert "did you mean 'liif-tau5'" in capsys.readouterr().err
