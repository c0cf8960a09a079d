"""tests/shared_data.py: a missing data root skips a test on a developer's machine and fails it under CI."""

import pytest
from shared_data import find_data_root, in_ci, require_data_root


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, False), ("", False), ("0", False), ("false", False), ("No", False), ("true", True), ("1", True)],
)
def test_ci_is_any_value_but_empty_or_false(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    assert in_ci() is expected


def test_a_missing_root_skips_locally_and_fails_under_ci(monkeypatch, tmp_path):
    monkeypatch.setenv("MOEISR_DATA", str(tmp_path / "nope"))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="MOEISR_DATA"):
        require_data_root()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"MOEISR_DATA=.*nope.*CI is set"):
        require_data_root()


def test_a_root_without_the_images_is_missing_too(monkeypatch, tmp_path):
    (tmp_path / "benchmark").mkdir()
    monkeypatch.setenv("MOEISR_DATA", str(tmp_path))
    assert find_data_root() == (None, f"data root {tmp_path} has no train/ folder; point MOEISR_DATA at the shared "
                                      "data folder")  # fmt: skip
    (tmp_path / "train").mkdir()
    assert find_data_root() == (tmp_path.resolve(), "")
    monkeypatch.setenv("CI", "true")
    assert require_data_root() == tmp_path.resolve()


def test_the_marker_and_the_fixture_give_the_same_root(shared_data):
    assert (shared_data / "benchmark" / "Set5" / "HR").is_dir()
    assert find_data_root()[0] == shared_data


def test_without_moeisr_data_the_checkout_folders_of_the_session_start_count(monkeypatch, tmp_path):
    import shared_data

    monkeypatch.delenv("MOEISR_DATA", raising=False)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(shared_data, "FALLBACKS", [tmp_path / "a" / "shared" / "data"])
    with pytest.raises(pytest.skip.Exception, match=r"no data root found \(tried .*a/shared/data\)"):
        require_data_root()
    for name in ("benchmark", "train"):
        (tmp_path / "a" / "shared" / "data" / name).mkdir(parents=True)
    monkeypatch.chdir(tmp_path)  # a test that moves away and hides the checkout still finds the folder
    monkeypatch.setattr("moeisr.data.roots.repo_root", lambda: tmp_path)
    assert require_data_root() == tmp_path / "a" / "shared" / "data"
