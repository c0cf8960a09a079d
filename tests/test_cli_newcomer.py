"""The CLI as a newcomer meets it: the README's quick start, short checkpoint names, folders, one size order,
x4-style scales, eval's options, one error prefix, sr's summary line and --budget, the bf16 warning.

Every test runs real invocations (`moeisr.cli.main` in this process, or a subprocess) on real images of the
shared data root (crops of Set5's MATLAB x4 LR references) with the bundled checkpoints. A missing data root
is an error here, never a skip.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image

from moeisr.cli import build_parser, main
from moeisr.commands import sr as sr_command
from moeisr.commands.checkpoints import checkpoint_dir, resolve_checkpoint
from moeisr.data.images import load_image
from moeisr.data.roots import data_root
from moeisr.models.checkpoint import load_model, save_checkpoint
from moeisr.registry import models

REPO = Path(__file__).resolve().parents[1]
BUNDLED = REPO / "results" / "checkpoints"


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def set5_lr(name: str = "bird") -> Path:
    """A Set5 MATLAB x4 LR reference (bird 72x72, baby 128x128, woman 57x86 ...); raises if data is missing."""
    path = data_root() / "benchmark" / "Set5" / "LR_bicubic" / "X4" / f"{name}x4.webp"
    assert path.is_file(), f"{path} is missing: the shared data root is incomplete"
    return path


def crop(tmp_path: Path, name: str = "bird", box=(16, 16, 40, 36), out: str | None = None) -> Path:
    """A real crop (box = left, top, right, bottom) of a Set5 LR image, saved as PNG in tmp_path."""
    path = tmp_path / (out or f"{name}_crop.png")
    path.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(set5_lr(name)) as im:
        im.convert("RGB").crop(box).save(path)
    return path


def cli(capsys, *argv) -> tuple[int, str, str]:
    """`moeisr *argv` in this process: (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(err: str, prefix: str) -> str:
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{prefix}: error: "), err
    assert "Traceback" not in err
    return lines[0]


def image_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size


def readme() -> str:
    return (REPO / "README.md").read_text(encoding="utf-8")


def bash_lines(text: str) -> list[str]:
    """The lines of the ```bash blocks of a Markdown text, in order."""
    lines, inside = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            inside = line.strip() == "```bash"
            continue
        if inside:
            lines.append(line)
    return lines


def commands_of(lines: list[str]) -> list[list[str]]:
    """`moeisr ...` commands (continuation lines joined, comments dropped), as argv lists without 'moeisr'."""
    commands, current = [], ""
    for line in lines:
        code = line.split(" #", 1)[0].rstrip() if not line.lstrip().startswith("#") else ""
        current = f"{current} {code.rstrip(chr(92))}" if current else code.rstrip(chr(92))
        if code.endswith("\\"):
            continue
        if current.strip().startswith("moeisr "):
            commands.append(shlex.split(current)[1:])
        current = ""
    return commands


# ---- 1. quick start and checkpoints -------------------------------------------------------------------------


def test_the_quick_start_opens_the_readme_in_three_lines_and_its_sr_command_runs(tmp_path, monkeypatch, capsys):
    text = readme()
    first_block = text[text.index("```bash") : text.index("```", text.index("```bash") + 3)]
    assert text.index("```bash") < text.index("## "), "the quick start comes before every section"
    lines = first_block.splitlines()[1:]
    assert len(lines) == 3 and lines[0].startswith("pip install") and lines[1].startswith("moeisr sr ")
    assert "bird_x4.png" in lines[2]  # says where the result goes
    argv = shlex.split(lines[1].split(" #")[0])[1:]
    # run it as written, from the checkout (the data root stands in for ../shared/data), writing into tmp_path
    argv = [a.replace("../shared/data", str(data_root())) for a in argv]
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, *argv)
    assert code == 0, err
    assert image_size(tmp_path / "bird_x4.png") == (288, 288)
    assert out.startswith("wrote bird_x4.png: 288x288 (WxH, x4 from 72x72)") and "moeisr_liif_v2.pt" in out


@pytest.mark.parametrize(
    "name", ["liif", "moeisr_liif", "moeisr-liif", "MoEISR-LIIF", "moeisr_liif.pt", "lte", "moeisr-liif-v2"]
)
def test_short_names_resolve_to_the_bundled_checkpoints_from_any_folder(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)  # not the checkout: the package's location decides
    stem = name.lower().replace("-", "_").removesuffix(".pt")
    assert resolve_checkpoint(name) == BUNDLED / f"{stem}.pt"
    assert checkpoint_dir() == BUNDLED


def test_sr_with_a_short_name_runs_the_bundled_checkpoint(tmp_path, monkeypatch, capsys):
    src = crop(tmp_path)
    monkeypatch.chdir(tmp_path)
    code, out, _ = cli(capsys, "sr", "moeisr-liif", src, "--scale", 2, "-o", "short.png")
    assert code == 0
    code, _, _ = cli(capsys, "sr", BUNDLED / "moeisr_liif.pt", src, "--scale", 2, "-o", "path.png")
    assert code == 0
    assert torch.equal(load_image(tmp_path / "short.png"), load_image(tmp_path / "path.png"))
    assert "with moeisr_liif.pt" in out


def test_short_names_follow_the_package_location_as_an_installed_package_would(tmp_path, monkeypatch, capsys):
    """The package's repository root decides: another root's results/checkpoints is used, and a root without
    one (a wheel in site-packages) has no short names, which the error says."""
    other = tmp_path / "checkout"
    torch.manual_seed(0)
    spec = {
        "name": "liif",
        "args": {
            "encoder_spec": {"name": "edsr-baseline", "args": {"n_resblocks": 1, "n_feats": 8, "no_upsampling": True}},
            "imnet_spec": {"name": "mlp", "args": {"out_dim": 3, "hidden_list": [16]}},
        },
    }
    save_checkpoint(other / "results" / "checkpoints" / "tiny.pt", models.make(spec))
    monkeypatch.setattr("moeisr.data.roots.repo_root", lambda: other)
    assert resolve_checkpoint("tiny") == other / "results" / "checkpoints" / "tiny.pt"
    code, out, _ = cli(capsys, "sr", "tiny", crop(tmp_path), "--scale", 2, "-o", tmp_path / "t.png")
    assert code == 0 and "with tiny.pt" in out
    site_packages = tmp_path / "site-packages"
    site_packages.mkdir()
    monkeypatch.setattr("moeisr.data.roots.repo_root", lambda: site_packages)
    code, _, err = cli(capsys, "sr", "liif", crop(tmp_path), "--scale", 2, "-o", tmp_path / "x.png")
    line = one_error_line(err, "moeisr sr")
    assert "no short names here" in line and "pip install -e" in line


def test_without_ckpt_the_default_checkpoint_is_named_on_stderr(tmp_path, capsys):
    code, out, err = cli(capsys, "sr", crop(tmp_path), "--scale", 2, "-o", tmp_path / "x.png")
    assert code == 0
    assert f"moeisr sr: no CKPT given; using the default checkpoint {BUNDLED / 'moeisr_liif_v2.pt'}" in err
    assert "with moeisr_liif_v2.pt" in out


@pytest.mark.parametrize("ckpt", ["weights/liif-edsr.pth", "lte_edsr.pth", "moeisr_lif"])
def test_a_missing_checkpoint_says_where_official_weights_come_from_and_lists_short_names(tmp_path, capsys, ckpt):
    code, _, err = cli(capsys, "sr", ckpt, crop(tmp_path), "--scale", 2, "-o", tmp_path / "x.png")
    assert code == 2
    line = one_error_line(err, "moeisr sr")
    assert f"checkpoint {ckpt} " in line
    assert "https://github.com/yinboc/liif" in line and "https://github.com/jaewon-lee-b/lte" in line
    bundled = sorted(p.stem for p in BUNDLED.glob("*.pt"))  # every bundled checkpoint is a short name
    assert {"liif", "lte", "moeisr_liif", "moeisr_lte"} <= set(bundled)
    assert f"short names: {', '.join(bundled)}" in line
    if ckpt == "moeisr_lif":
        assert "did you mean moeisr_liif?" in line
    assert not (tmp_path / "x.png").exists()


# ---- 2. folders, one size order, x4 scales --------------------------------------------------------------------


def test_a_folder_input_upscales_every_image_with_a_progress_bar(tmp_path, capsys):
    folder = tmp_path / "in"
    boxes = {"bird": (10, 10, 30, 26), "head": (20, 20, 38, 40), "woman": (5, 30, 29, 50)}
    for name, box in boxes.items():
        crop(folder, name, box, out=f"{name}.png")
    (folder / "notes.txt").write_text("not an image: skipped")
    code, out, err = cli(capsys, "sr", "liif", folder, "--scale", "x2", "-o", tmp_path / "out")
    assert code == 0, err
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["bird.png", "head.png", "woman.png"]
    for name, (left, top, right, bottom) in boxes.items():
        assert image_size(tmp_path / "out" / f"{name}.png") == (2 * (right - left), 2 * (bottom - top))
    assert "3/3" in err  # tqdm's bar on stderr
    assert out.strip().splitlines() == [out.strip()] and out.startswith(f"wrote 3 images to {tmp_path / 'out'}/")
    # the same pixels as upscaling the image alone
    assert main(["sr", "liif", str(folder / "head.png"), "--scale", "2", "-o", str(tmp_path / "head.png")]) == 0
    assert torch.equal(load_image(tmp_path / "head.png"), load_image(tmp_path / "out" / "head.png"))


@pytest.mark.parametrize(
    ("output", "message"),
    [("out.png", "is a folder, so -o must name a folder too"), ("in", "is the input folder")],
)
def test_a_folder_input_needs_another_folder_as_output(tmp_path, capsys, output, message):
    crop(tmp_path / "in", out="a.png")
    code, _, err = cli(capsys, "sr", "bicubic", tmp_path / "in", "--scale", 2, "-o", tmp_path / output)
    assert code == 2 and message in one_error_line(err, "moeisr sr")
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == ["a.png"]


def test_an_empty_folder_is_refused(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = cli(capsys, "sr", "bicubic", tmp_path / "empty", "--scale", 2, "-o", tmp_path / "out")
    assert code == 2 and "holds no image files" in one_error_line(err, "moeisr sr")


def test_sizes_are_width_x_height_in_sr_and_flops(tmp_path, capsys):
    src = crop(tmp_path, "woman", (0, 0, 20, 30))  # 20 wide, 30 tall
    code, out, err = cli(capsys, "sr", "bicubic", src, "--size", "50x75", "-o", tmp_path / "sr.png")
    assert code == 0 and err == ""
    assert image_size(tmp_path / "sr.png") == (50, 75) and ": 50x75 (WxH, from 20x30)" in out
    # the other order is not taken silently: it stretches the image, and a warning says so
    with pytest.warns(UserWarning, match=r"^--size 75x50 is width x height: .* write --size 50x75$"):
        code, _, _ = cli(capsys, "sr", "bicubic", src, "--size", "75x50", "-o", tmp_path / "sr2.png")
    assert code == 0 and image_size(tmp_path / "sr2.png") == (75, 50)
    code, out, _ = cli(capsys, "flops", "liif", "--lr-size", "20x30", "--scale", 2, "--json")
    assert code == 0 and '"lr_size": [\n    30,\n    20\n  ]' in out  # the library's (H, W)
    code, out, _ = cli(capsys, "flops", "liif", "--image", src, "--scale", 2)
    assert code == 0 and out.startswith("liif.pt (liif): LR 20x30 -> 40x60 (x2, WxH)")
    code, _, err = cli(capsys, "flops", "liif", "--image", src, "--lr-size", "30x20", "--scale", 2)
    line = one_error_line(err, "moeisr flops")
    assert "--lr-size 30x20 does not match" in line and "--lr-size is width x height: 20x30 is the image's size" in line
    parser = build_parser()
    for command, option in (("sr", "--size"), ("flops", "--lr-size")):
        help_text = " ".join(parser._subparsers._group_actions[0].choices[command].format_help().split())
        assert f"{option} WxH" in help_text and "width x height" in help_text


@pytest.mark.parametrize("scale", ["x4", "4x", "X4", "×4", " x4 "])
def test_x4_4x_and_X4_are_the_scale_4(tmp_path, capsys, scale):
    src = crop(tmp_path)  # 24x20
    code, out, _ = cli(capsys, "sr", "bicubic", src, "--scale", scale, "-o", tmp_path / "x.png")
    assert code == 0 and image_size(tmp_path / "x.png") == (96, 80) and "(WxH, x4 from 24x20)" in out
    assert build_parser().parse_args(["eval", "bicubic", "--scales", f"2,{scale}", "--out", "r.csv"]).scales == [2, 4]
    code, out, _ = cli(capsys, "flops", "liif", "--lr-size", "24x20", "--scale", scale, "--json")
    assert code == 0 and '"scale": 4.0' in out


@pytest.mark.parametrize("scale", ["xx4", "4x4", "x", "four"])
def test_other_scale_spellings_are_refused(tmp_path, capsys, scale):
    code, _, err = cli(capsys, "sr", "bicubic", crop(tmp_path), "--scale", scale, "-o", tmp_path / "x.png")
    assert code == 2 and "is not a number" in one_error_line(err, "moeisr sr")


# ---- 3. eval options, one error prefix ------------------------------------------------------------------------


def test_eval_options_have_help_and_defaults():
    parser = build_parser()
    eval_parser = parser._subparsers._group_actions[0].choices["eval"]
    actions = {a.dest: a for a in eval_parser._actions}
    for dest in ("sets", "scales", "protocol", "device"):
        assert actions[dest].help and "default" in actions[dest].help, dest
    args = parser.parse_args(["eval", "bicubic", "--out", "r.csv"])
    assert args.sets == ["Set5", "Set14", "B100", "Urban100"] and args.scales == [2.0, 3.0, 4.0]
    assert args.protocol == "benchmark" and args.device == "cpu"


def test_eval_set_names_become_canonical(tmp_path, capsys):
    out = tmp_path / "r.csv"
    code, stdout, err = cli(
        capsys,
        *("eval", "bicubic", "--sets", "set5,SET14", "--scales", "x2", "--limit", "set5=1", "--limit", "set14=1"),
        *("--no-lpips", "--out", out, "--quiet"),
    )
    assert code == 0, err
    rows = out.read_text().splitlines()
    header = rows[0].split(",")
    datasets = [row.split(",")[header.index("dataset")] for row in rows[1:]]
    assert datasets == ["Set5", "Set14"] and "Set5" in stdout


@pytest.mark.parametrize("name", ["results.xlsx", "results", "results.CSV.gz"])
def test_eval_refuses_an_out_that_is_not_a_csv(tmp_path, capsys, name):
    code, _, err = cli(capsys, "eval", "bicubic", "--sets", "Set5", "--scales", 2, "--out", tmp_path / name)
    assert code == 2
    assert "moeisr eval writes CSV only" in one_error_line(err, "moeisr eval")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("argv", "prefix", "needle"),
    [
        (["eval", "bicubic"], "moeisr eval", "the following arguments are required: --out"),
        (["eval", "bicubic", "--out", "r.csv", "--scales", "0"], "moeisr eval", "--scales: '0' must be"),
        (["eval", "bicubic", "--out", "r.csv", "--sets", "Set6"], "moeisr eval", "unknown set 'Set6'"),
        (["eval", "bicubic", "--out", "r.csv", "--protocol", "x"], "moeisr eval", "argument --protocol: invalid"),
        (["sr", "IN.png", "--scale", "2"], "moeisr sr", "the following arguments are required: -o/--output"),
        (["sr", "bicubic", "IN.png", "--scale", "2", "-o", "x.png", "--bogus"], "moeisr sr", "unrecognized arguments"),
        (["sr", "bicubic", "nope.png", "--scale", "2", "-o", "x.png"], "moeisr sr", "nope.png: no such image file"),
        (["flops", "liif", "--scale", "2"], "moeisr flops", "pass --lr-size WxH"),
        (["data", "verify", "--bogus"], "moeisr data verify", "unrecognized arguments: --bogus"),
        (["bogus"], "moeisr", "invalid choice: 'bogus'"),
    ],
)
def test_every_error_is_one_line_with_the_prefix_of_its_command(tmp_path, monkeypatch, capsys, argv, prefix, needle):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(capsys, *argv)
    assert code == 2
    assert needle in one_error_line(err, prefix)


def test_the_error_prefix_is_the_same_in_a_subprocess(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "moeisr", "eval", "bicubic", "--scales", "nan", "--out", "r.csv"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == "moeisr eval: error: --scales: 'nan' must be a finite number >= 1\n"


# ---- 4. what sr prints, --budget ------------------------------------------------------------------------------


def test_sr_prints_one_summary_line_with_path_size_and_time(tmp_path, capsys):
    src = crop(tmp_path)  # 24x20
    for ckpt in ("bicubic", "liif"):
        code, out, _ = cli(capsys, "sr", ckpt, src, "--scale", 2.5, "-o", tmp_path / f"{ckpt}.png")
        assert code == 0
        pattern = rf"wrote {re.escape(str(tmp_path / ckpt))}\.png: 60x50 \(WxH, x2\.5 from 24x20\) in \d+\.\d\d s with "
        assert re.fullmatch(pattern + re.escape("bicubic" if ckpt == "bicubic" else "liif.pt") + "\n", out), out


def test_the_moeisr_summary_gives_the_decoder_cost_and_expert_shares_of_the_routing_that_ran(tmp_path, capsys):
    src = crop(tmp_path, "baby", (40, 40, 72, 64))  # 32x24
    code, out, _ = cli(capsys, "sr", "moeisr_liif", src, "--scale", 3, "-o", tmp_path / "x.png")
    assert code == 0
    match = re.search(r"decoder cost (\d+\.\d)% of all-deepest, expert shares (.*) \(cheapest\.\.deepest\)", out)
    assert match, out
    shares = [float(s.rstrip("%")) for s in match[2].split(" / ")]
    model = load_model(BUNDLED / "moeisr_liif.pt")
    experts = model.expert_map(load_image(src).unsqueeze(0), (72, 96))
    counts = torch.bincount(experts.flatten(), minlength=model.n_experts).double()
    expected_shares = (100 * counts / counts.sum()).tolist()
    expected_cost = float(100 * (counts / counts.sum() * model.experts.relative_costs()).sum())
    assert shares == [round(s, 1) for s in expected_shares]
    assert float(match[1]) == round(expected_cost, 1)


def test_budget_picks_the_routing_knob_that_fits_the_decoder_cost(tmp_path, capsys):
    src = crop(tmp_path, "baby", (40, 40, 72, 64))
    code, out, _ = cli(capsys, "sr", "moeisr-liif", src, "--scale", 3, "-o", tmp_path / "b.png", "--budget", 60)
    assert code == 0
    cost = float(re.search(r"decoder cost (\d+\.\d)%", out)[1])
    knob = float(re.search(r"--budget 60%: routing knob (\S+)", out)[1])
    assert cost <= 60.05
    model = load_model(BUNDLED / "moeisr_liif.pt")
    lr = load_image(src).unsqueeze(0)
    assert knob == pytest.approx(model.knob_for_budget(lr, (72, 96), 0.6), rel=1e-3)
    expected = model.upscale(lr, (72, 96), routing_knob=model.knob_for_budget(lr, (72, 96), 0.6))
    assert (load_image(tmp_path / "b.png") - expected[0]).abs().max() <= 0.5 / 255 + 1e-6


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--budget", "60", "--routing-knob", "1"], "argument --routing-knob: not allowed with argument --budget"),
        (["--budget", "5"], "--budget 5% is below the cheapest expert's cost"),
        (["--budget", "150"], "--budget is a percentage of the all-deepest decoder cost in (0, 100]"),
    ],
)
def test_bad_budgets_are_refused(tmp_path, capsys, extra, message):
    code, _, err = cli(capsys, "sr", "moeisr_liif", crop(tmp_path), "--scale", 2, "-o", tmp_path / "x.png", *extra)
    assert code == 2 and message in one_error_line(err, "moeisr sr")


def test_budget_needs_a_moeisr_checkpoint(tmp_path, capsys):
    code, _, err = cli(capsys, "sr", "liif", crop(tmp_path), "--scale", 2, "-o", tmp_path / "x.png", "--budget", 60)
    assert code == 2 and "--budget needs a MoEISR checkpoint" in one_error_line(err, "moeisr sr")


# ---- 5. bf16 ---------------------------------------------------------------------------------------------------


def test_bf16_warns_where_the_cpu_has_no_bf16_units(tmp_path):
    """ATEN_CPU_CAPABILITY=avx2 makes torch report an AVX2-only CPU, as such a machine does."""
    src = crop(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "moeisr", "sr", "liif", str(src), "--scale", "2", "-o", "x.png", "--precision", "bf16"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO), "ATEN_CPU_CAPABILITY": "avx2", "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr
    warning = result.stderr.strip()
    assert warning.startswith("moeisr sr: warning: --precision bf16: this CPU has no bf16 units (torch reports AVX2")
    assert "will likely be slower than fp32 here" in warning and "measured on an AMD EPYC" in warning
    assert "\n" not in warning and result.stdout.startswith("wrote x.png: 48x40")


@pytest.mark.parametrize(
    ("capability", "flags", "units"),
    [("AVX2", {"avx2"}, False), ("AVX512", {"avx512f"}, False), ("AVX512", {"avx512f", "avx512_bf16"}, True)],
)
def test_bf16_warns_only_without_bf16_units(tmp_path, capsys, monkeypatch, capability, flags, units):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(sr_command, "_cpu_flags", lambda: flags)
    monkeypatch.setattr(sr_command.platform, "machine", lambda: "x86_64")
    assert sr_command.cpu_bf16_units() is units
    argv = ("sr", "liif", crop(tmp_path), "--scale", 2, "-o", tmp_path / "x.png", "--precision", "bf16")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, out, _ = cli(capsys, *argv)
    assert code == 0 and out.endswith("with liif.pt (bf16)\n")
    said = [str(w.message) for w in caught if "bf16" in str(w.message)]
    if units:
        assert said == []
    else:
        assert len(said) == 1 and said[0].startswith(
            f"--precision bf16: this CPU has no bf16 units (torch reports {capability}"
        )


def test_no_text_promises_a_bf16_speed_up_in_general():
    parser = build_parser()
    sr_help = " ".join(parser._subparsers._group_actions[0].choices["sr"].format_help().split())
    assert "Not a general speed-up" in sr_help and "AMD EPYC" in sr_help and "Intel Xeon" in sr_help
    assert "faster here" not in sr_help
    usage = " ".join(line.lstrip("# ") for line in bash_lines(readme()))  # the comments as one text
    assert "--precision bf16" in usage and "Faster, not bit-exact" not in usage
    assert (
        "not bit-exact (PSNR within 0.002 dB of fp32 with the bundled checkpoints) and not a general speed-up" in usage
    )
    speed = (REPO / "docs" / "speed.md").read_text(encoding="utf-8")
    assert "**Not a general speed-up**" in speed and "1.6× *slower*" in speed


# ---- 6. the README --------------------------------------------------------------------------------------------


def test_the_failure_table_lives_in_docs_and_the_readme_links_it():
    text = readme()
    assert "| Case | Commands |" not in text and "## Failure behaviour" not in text
    assert "[docs/troubleshooting.md](docs/troubleshooting.md)" in text
    table = (REPO / "docs" / "troubleshooting.md").read_text(encoding="utf-8")
    assert table.count("\n| ") > 25 and "| Case | Commands |" in table


def test_every_moeisr_command_in_the_readme_parses_and_names_existing_checkpoints_and_files():
    commands = commands_of(bash_lines(readme()))
    assert len(commands) > 10
    parser = build_parser()
    checked = 0
    for argv in commands:
        if any(a.startswith("[") for a in argv):
            continue  # a synopsis with optional parts, e.g. `moeisr reproduce ... [--retrain]`
        args = parser.parse_args(argv)
        if args.command == "sr":
            assert args.ckpt in (None, "bicubic") or resolve_checkpoint(args.ckpt).is_file(), argv
            checked += 1
        elif args.command == "eval":
            for spec in args.models:
                assert spec == "bicubic" or resolve_checkpoint(spec.rpartition("=")[2]).is_file(), argv
            checked += 1
        elif args.command in ("flops", "train"):
            source = args.source if args.command == "flops" else args.spec
            assert (REPO / source).is_file() or resolve_checkpoint(source).is_file(), argv
            checked += 1
        for value in vars(args).values():
            if isinstance(value, str) and value.startswith("../shared/data"):
                assert (data_root() / value.removeprefix("../shared/data/")).is_file(), value
    assert checked >= 8
