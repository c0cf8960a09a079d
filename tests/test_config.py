"""Experiment specs: validation messages, profile merging, overrides, init_from, config hashing.

Every test uses the repository's real `experiments/profiles.yaml`, copied beside experiment files
written into a temporary folder.
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from moeisr.config import (
    HASH_EXCLUDED,
    config_hash,
    load_experiment,
    parse_override,
    spec_from_dict,
)
from moeisr.errors import UserError

REPO = Path(__file__).resolve().parents[1]
PROFILES = REPO / "experiments" / "profiles.yaml"

LIIF = """
model:
  name: liif
  args:
    encoder_spec: {name: edsr-baseline, args: {no_upsampling: true}}
    imnet_spec: {name: mlp, args: {out_dim: 3, hidden_list: [256, 256, 256, 256]}}
"""


@pytest.fixture
def exp_dir(tmp_path: Path) -> Path:
    shutil.copy(PROFILES, tmp_path / "profiles.yaml")
    return tmp_path


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def error_of(*args, **kwargs) -> str:
    with pytest.raises(UserError) as info:
        load_experiment(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# ------------------------------------------------------------------------------------ validation


def test_unknown_key_names_file_dotted_key_and_nearest_spelling(exp_dir):
    path = write(exp_dir, "liif", LIIF + "optim:\n  lr_rate: 1.0e-4\n")
    assert error_of(path, "smoke") == f"{path}: unknown key 'optim.lr_rate' (did you mean 'optim.lr'?)"


def test_unknown_key_suggests_a_misspelling_and_a_key_filed_in_the_wrong_section(exp_dir):
    path = write(exp_dir, "liif", LIIF + "data:\n  batchsize: 4\n")
    assert error_of(path, "cpu") == f"{path}: unknown key 'data.batchsize' (did you mean 'data.batch_size'?)"
    path = write(exp_dir, "liif", LIIF + "optim:\n  batch_size: 4\n")
    assert error_of(path, "cpu").endswith("unknown key 'optim.batch_size' (did you mean 'data.batch_size'?)")


def test_unknown_key_in_a_profile_section_and_in_an_override_names_its_source(exp_dir):
    path = write(exp_dir, "liif", LIIF + "profiles:\n  smoke:\n    train.sead: 3\n")
    assert error_of(path, "smoke") == f"{path} (profiles.smoke): unknown key 'train.sead' (did you mean 'train.seed'?)"
    path = write(exp_dir, "liif", LIIF)
    message = error_of(path, "smoke", ["eval.scale=[2]"])
    assert message == "override 'eval.scale=[2]': unknown key 'eval.scale' (did you mean 'eval.scales'?)"


def test_wrong_type_names_the_file_that_set_the_key(exp_dir):
    path = write(exp_dir, "liif", LIIF + "data:\n  batch_size: big\n")
    assert error_of(path, "paper") == f"{path}: 'data.batch_size' must be an integer, got 'big' (str)"
    path = write(exp_dir, "liif", LIIF + "profiles:\n  cpu:\n    eval: {scales: [2, x4]}\n")
    assert error_of(path, "cpu") == f"{path} (profiles.cpu): 'eval.scales[1]' must be a number, got 'x4' (str)"
    message = error_of(write(exp_dir, "liif", LIIF), "smoke", ["train.deterministic=1"])
    assert message == "override 'train.deterministic=1': 'train.deterministic' must be true or false, got 1 (int)"


def test_wrong_type_in_the_shared_profiles_file_is_blamed_on_it(exp_dir):
    shared = exp_dir / "profiles.yaml"
    shared.write_text(shared.read_text().replace("inp_size: 16", "inp_size: sixteen"))
    message = error_of(write(exp_dir, "liif", LIIF), "smoke")
    assert message == f"{shared} (profile 'smoke'): 'data.inp_size' must be an integer, got 'sixteen' (str)"


def test_values_out_of_range_and_missing_model_are_user_errors(exp_dir):
    path = write(exp_dir, "liif", LIIF)
    assert "'optim.lr' must be positive" in error_of(path, "cpu", ["optim.lr=0"])
    assert "'data.scale_max' must be >= data.scale_min" in error_of(path, "cpu", ["data.scale_max=0.5"])
    assert "'data.sample_q' must be at most" in error_of(path, "smoke", ["data.sample_q=257"])  # 16 x 16 = 256
    assert "strictly increasing" in error_of(path, "paper", ["optim.schedule.milestones=[300, 200]"])
    assert error_of(write(exp_dir, "empty", "data: {}\n"), "smoke").endswith("missing required key 'model'")


def test_missing_file_unknown_profile_bad_yaml_and_duplicate_keys(exp_dir):
    write(exp_dir, "liif", LIIF)
    missing = exp_dir / "lif.yaml"
    assert error_of(missing, "smoke") == f"{missing}: experiment file not found (did you mean {exp_dir / 'liif.yaml'}?)"
    message = error_of(exp_dir / "liif.yaml", "fast")
    assert message == f"{exp_dir / 'liif.yaml'}: unknown profile 'fast' (available: cpu, paper, smoke)"
    assert "did you mean 'smoke'?" in error_of(exp_dir / "liif.yaml", "smok")
    bad = write(exp_dir, "bad", "model: {name: liif\n")
    assert error_of(bad, "smoke").startswith(f"{bad}: invalid YAML")
    dup = write(exp_dir, "dup", LIIF + "optim: {lr: 1.0e-4}\noptim: {lr: 2.0e-4}\n")
    assert "duplicate key 'optim'" in error_of(dup, "smoke")
    assert error_of(exp_dir / "liif.yaml", "smoke", profiles_path=exp_dir / "nope.yaml").endswith(
        "profiles file not found"
    )


def test_malformed_override():
    with pytest.raises(UserError, match="must look like key=value"):
        parse_override("optim.lr")
    assert parse_override("optim.lr=1e-4") == ("optim.lr", 1e-4)  # a float, unlike plain YAML 1.1
    assert parse_override("eval.limit={Urban100: 20}") == ("eval.limit", {"Urban100": 20})
    assert parse_override("data.val_set=") == ("data.val_set", None)


# --------------------------------------------------------------------------------------- profiles


def test_the_shipped_profiles(exp_dir):
    path = write(exp_dir, "liif", LIIF)
    smoke, cpu, paper = (load_experiment(path, p) for p in ("smoke", "cpu", "paper"))
    assert (smoke.optim.max_steps, smoke.data.batch_size, smoke.data.inp_size, smoke.data.sample_q) == (20, 2, 16, 64)
    assert smoke.eval.limit_for("Set5") == 1
    assert (cpu.data.inp_size, cpu.data.batch_size, cpu.data.sample_q) == (32, 8, 1024)
    assert (cpu.optim.lr, cpu.optim.warmup_steps > 0, cpu.eval.limit_for("Set5")) == (5e-4, True, None)
    assert (cpu.eval.limit_for("B100"), cpu.eval.limit_for("Urban100"), cpu.data.val_scale) == (25, 10, 2)
    assert paper.data.train_sets == ["DIV2K_train"]
    assert (paper.data.inp_size, paper.data.batch_size, paper.data.sample_q) == (48, 16, 2304)
    assert (paper.optim.lr, paper.optim.max_steps, paper.optim.schedule.gamma) == (1e-4, 1_000_000, 0.5)
    assert paper.optim.schedule.milestones == [200_000, 400_000, 600_000, 800_000]
    assert (smoke.name, smoke.profile, smoke.path) == ("liif", "smoke", path)
    assert len({smoke.config_hash, cpu.config_hash, paper.config_hash}) == 3


def test_merge_order_shared_profile_then_file_then_its_profile_then_overrides(exp_dir):
    path = write(
        exp_dir,
        "liif",
        LIIF
        + textwrap.dedent(
            """
        optim:
          lr: 2.0e-4
        profiles:
          smoke:
            optim.max_steps: 5
            model.args.imnet_spec.args.hidden_list: [16, 16]
        """
        ),
    )
    smoke = load_experiment(path, "smoke")
    assert smoke.optim.lr == 2e-4  # the file beats the shared profile's lr
    assert smoke.optim.max_steps == 5  # the file's own profile beats the shared one
    assert smoke.data.batch_size == 2  # untouched shared smoke value
    assert smoke.model.args["imnet_spec"] == {"name": "mlp", "args": {"out_dim": 3, "hidden_list": [16, 16]}}
    assert smoke.model.args["encoder_spec"]["name"] == "edsr-baseline"  # nested mappings merge
    assert smoke.provenance["optim.max_steps"] == f"{path} (profiles.smoke)"
    assert smoke.provenance["data.batch_size"] == f"{exp_dir / 'profiles.yaml'} (profile 'smoke')"

    cpu = load_experiment(path, "cpu", ["optim.lr=1e-3", "data.batch_size=4", "eval.limit={Set14: 3}"])
    assert (cpu.optim.lr, cpu.data.batch_size, cpu.optim.max_steps) == (1e-3, 4, 6000)
    assert cpu.eval.limit == {"B100": 25, "Urban100": 10, "Set14": 3}  # a mapping merges into the shared limits...
    cpu2 = load_experiment(path, "cpu", ["eval.limit=5"])
    assert cpu2.eval.limit_for("B100") == 5  # ...and a number replaces it
    assert cpu.model.args["imnet_spec"]["args"]["hidden_list"] == [256, 256, 256, 256]
    assert cpu.provenance["optim.lr"] == "override 'optim.lr=1e-3'"


def test_an_experiment_may_define_its_own_profile(exp_dir):
    path = write(exp_dir, "liif", LIIF + "profiles:\n  tiny: {optim: {max_steps: 3}}\n")
    tiny = load_experiment(path, "tiny")
    assert (tiny.profile, tiny.optim.max_steps, tiny.data.inp_size) == ("tiny", 3, 48)  # schema defaults below


def test_profiles_yaml_is_found_one_folder_up_for_ablations(exp_dir):
    write(exp_dir, "liif", LIIF)
    (exp_dir / "ablations").mkdir()
    ablation = write(exp_dir / "ablations", "a1", LIIF)
    assert load_experiment(ablation, "smoke").optim.max_steps == 20


def test_to_dict_round_trips_and_types_are_normalised(exp_dir):
    path = write(exp_dir, "liif", LIIF + "eval: {scales: [2, 3], knobs: [null, 1, fast]}\noptim: {lr: 1e-4}\n")
    exp = load_experiment(path, "paper")
    assert exp.eval.scales == [2.0, 3.0] and all(isinstance(s, float) for s in exp.eval.scales)
    assert exp.eval.knobs == [None, 1.0, "fast"]
    assert exp.optim.lr == 1e-4 and exp.optim.betas == (0.9, 0.999)
    data = exp.to_dict()
    assert data["optim"]["betas"] == [0.9, 0.999] and data["name"] == "liif"
    assert spec_from_dict(data) == exp.spec
    with pytest.raises(AttributeError):
        exp.spec.optim.lr = 1.0  # frozen


# ---------------------------------------------------------------------------------------- hashing


def test_config_hash_is_stable_and_ignores_key_order_defaults_and_excluded_keys(exp_dir):
    minimal = {"model": {"name": "liif", "args": {"a": 1, "b": [1, 2]}}}
    reordered = {"model": {"args": {"b": [1, 2], "a": 1}, "name": "liif"}}
    # Pinned: changes only if the hashed defaults or the canonical form change. Update it deliberately.
    assert config_hash(minimal) == "fcb474c67b84"
    assert config_hash(reordered) == config_hash(minimal)
    full = spec_from_dict(minimal)
    assert config_hash(full) == config_hash(minimal)  # defaults written out or not
    for key, value in [
        ("name", "other"),
        ("description", "same weights"),
        ("eval.scales", [2, 30]),
        ("eval.limit", 3),
        ("train.log_every", 7),
        ("train.val_every", 7),
        ("train.ckpt_every", 7),
        ("data.val_set", "Set14"),
        ("data.val_limit", 2),
    ]:
        assert config_hash({**minimal, key: value}) == config_hash(minimal), key
    assert {k.split(".")[0] for k in HASH_EXCLUDED} == {"name", "description", "eval", "train", "data"}


@pytest.mark.parametrize(
    "key, value",
    [
        ("model.args.a", 2),
        ("model.name", "lte"),
        ("optim.lr", 2e-4),
        ("optim.schedule.milestones", [100]),
        ("data.inp_size", 64),
        ("data.train_sets", ["T91"]),
        ("train.seed", 1),
        ("loss.balance_weight", 0.1),
        ("init_from", "liif"),
    ],
)
def test_config_hash_changes_with_anything_that_shapes_the_weights(key, value):
    minimal = {"model": {"name": "liif", "args": {"a": 1}}}
    assert config_hash({**minimal, key: value}) != config_hash(minimal)


def test_init_from_loads_the_parent_and_chains_its_hash(exp_dir):
    write(exp_dir, "liif", LIIF)
    child_path = write(exp_dir, "moeisr_liif", "model: {name: moeisr, args: {}}\ninit_from: liif\n")
    child = load_experiment(child_path, "smoke")
    assert child.parent.name == "liif" and child.parent.profile == "smoke"
    assert child.config_hash != config_hash(child.spec)  # the parent's hash is mixed in
    assert child.config_hash == config_hash(child.spec, parent_hash=child.parent.config_hash)
    before = child.config_hash
    write(exp_dir, "liif", LIIF + "optim: {lr: 3.0e-4}\n")  # retrain the parent differently...
    assert load_experiment(child_path, "smoke").config_hash != before  # ...and the child's hash moves
    assert child.metadata() == {
        "experiment": "moeisr_liif",
        "profile": "smoke",
        "config_hash": before,
        "spec_path": str(child_path),
    }


def test_init_from_errors(exp_dir):
    write(exp_dir, "liif", LIIF)
    typo = write(exp_dir, "m", "model: {name: moeisr}\ninit_from: liff\n")
    assert error_of(typo, "smoke").endswith("(did you mean 'liif'?)")
    write(exp_dir, "a", "model: {name: x}\ninit_from: b\n")
    write(exp_dir, "b", "model: {name: x}\ninit_from: a\n")
    assert "init_from makes a cycle (a -> b -> a)" in error_of(exp_dir / "a.yaml", "smoke")


@pytest.mark.parametrize(
    "text, key",
    [
        ("data: {scale_min: .nan}\n", "data.scale_min"),
        ("data: {scale_max: .inf}\n", "data.scale_max"),
        ("eval: {scales: [2, .nan]}\n", "eval.scales"),
        ("loss: {tau: .inf}\n", "loss.tau"),
    ],
)
def test_nan_or_inf_written_in_the_spec_file_is_a_one_line_error(exp_dir, text, key):
    path = write(exp_dir, "liif", LIIF + text)
    with pytest.raises(UserError) as info:
        load_experiment(path, "smoke")
    message = str(info.value)
    assert str(path) in message and f"'{key}' must be a finite number" in message and "\n" not in message


def test_an_init_from_experiment_inherits_its_parents_model(tmp_path):
    (tmp_path / "profiles.yaml").write_text("profiles:\n  small: {}\n  tiny: {}\n")
    (tmp_path / "base.yaml").write_text(
        "model: {name: liif, args: {encoder_spec: {name: edsr-baseline, args: {n_feats: 64}}}}\n"
        "profiles:\n  tiny:\n    model.args.encoder_spec.args: {n_feats: 8}\n"
    )
    (tmp_path / "child.yaml").write_text("init_from: base\n")
    (tmp_path / "moe.yaml").write_text(
        'init_from: base\nmodel: {name: moeisr, args: {backbone_spec: "@init_from", experts: depth}}\n'
    )
    (tmp_path / "orphan.yaml").write_text('model: {name: moeisr, args: {backbone_spec: "@init_from"}}\n')
    for profile, feats in (("small", 64), ("tiny", 8)):
        parent = load_experiment(tmp_path / "base.yaml", profile)
        child = load_experiment(tmp_path / "child.yaml", profile)
        moe = load_experiment(tmp_path / "moe.yaml", profile)
        assert child.spec.model == parent.spec.model  # the parent's model, under the same profile
        assert moe.spec.model.args["backbone_spec"] == {"name": "liif", "args": parent.spec.model.args}
        assert moe.spec.model.args["backbone_spec"]["args"]["encoder_spec"]["args"]["n_feats"] == feats
    with pytest.raises(UserError, match="init_from is not set"):
        load_experiment(tmp_path / "orphan.yaml", "small")


def test_a_variant_extends_an_experiment_and_states_only_what_it_changes(tmp_path):
    experiments = tmp_path / "experiments"
    shutil.copytree(REPO / "experiments", experiments)
    variant = write(
        experiments,
        "moeisr_liif_variant",
        "extends: moeisr_liif\ninit_from: liif_converged\ninit: {experts: prefix_lstsq}\n"
        "profiles:\n  cpu: {optim.lr: 1.0e-4}\n",
    )
    for profile in ("smoke", "cpu", "paper"):
        base = load_experiment(experiments / "moeisr_liif.yaml", profile)
        got = load_experiment(variant, profile)
        assert got.name == "moeisr_liif_variant" and got.parent.name == "liif_converged"
        assert got.spec.init.experts == "prefix_lstsq" and base.spec.init.experts != "prefix_lstsq"
        lr = 1e-4 if profile == "cpu" else base.optim.lr
        # everything else is the extended file's, its profile section included (the cpu profile's 2000 steps)
        expected = base.to_dict() | {"name": got.name, "init_from": "liif_converged"}
        expected["init"] = got.to_dict()["init"]
        expected["optim"] = base.to_dict()["optim"] | {"lr": lr}
        # the model is the new parent's (@init_from), which is the converged LIIF's = the 6000-step LIIF's
        assert got.to_dict() == expected
        assert got.provenance["loss.balance_weight"].endswith("moeisr_liif.yaml (extended)")
    assert load_experiment(variant, "cpu").provenance["optim.max_steps"].endswith("(profiles.cpu, extended)")

    write(experiments, "typo", "extends: moeisr_liff\n")
    assert error_of(experiments / "typo.yaml", "smoke").endswith("(did you mean 'moeisr_liif'?)")
    write(experiments, "a", "extends: b\n")
    write(experiments, "b", "extends: a\n")
    assert "extends makes a cycle (a -> b -> a)" in error_of(experiments / "a.yaml", "smoke")
    write(experiments, "bad", "extends: [moeisr_liif]\n")
    assert "extends: expected an experiment name" in error_of(experiments / "bad.yaml", "smoke")


def test_the_validation_label_says_what_each_run_validates_on():
    experiments = REPO / "experiments"
    labels = {
        n: load_experiment(experiments / f"{n}.yaml", "cpu").data.validation_label() for n in ("liif", "liif_converged")
    }
    assert labels == {"liif": "Set5 (first 5), ×2", "liif_converged": "T91, 72 px crops, ×2, ×4"}
    assert load_experiment(experiments / "liif.yaml", "cpu", ["data.val_set=null"]).data.validation_label() is None


def test_the_kind_names_the_model_and_the_backbone_it_is_built_over():
    experiments = REPO / "experiments"
    kinds = {n: load_experiment(experiments / f"{n}.yaml", "cpu").kind for n in ("liif", "lte_d2", "moeisr_lte_v2")}
    assert kinds == {"liif": "liif", "lte_d2": "lte", "moeisr_lte_v2": "moeisr/lte"}
    assert load_experiment(experiments / "moeisr_lte_v2.yaml", "cpu").family == "lte"
