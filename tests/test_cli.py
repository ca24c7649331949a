"""impasto's command line: real renders at 64 px, and one test per kind of bad input.

Every bad input must give exit code 2, exactly one line on stderr, no traceback and no
output file. Renders use the real engine and the real (converted, cached) VGG-16.
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from impasto import __version__, cli
from impasto.engine.params import RenderParams

SHARED = Path(__file__).parents[1] / ".." / "shared"
FAST = ["--num-iterations", "2", "--image-size", "64", "-q"]


@pytest.fixture(scope="module", autouse=True)
def weights_cache(tmp_path_factory):
    """A private cache for the converted VGG-16 (~60 MB, ~1 s to build once per module)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IMPASTO_CACHE_DIR", str(tmp_path_factory.mktemp("impasto-cache")))
        yield


def noise_image(path: Path, size=(96, 80), seed=0) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def images(tmp_path):
    """A 96×80 content photo and a 72×72 style image, both noise."""
    return noise_image(tmp_path / "content.png"), noise_image(tmp_path / "style.jpg", (72, 72), 1)


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- successful renders -------------------------------------------------------------

def test_render_writes_an_image_of_the_asked_size(images, tmp_path, capsys):
    content, style = images
    out = tmp_path / "out.png"
    code, _, stderr = run(capsys, "render", content, "--style", style, "-o", out, *FAST)
    assert (code, stderr) == (0, "")
    with Image.open(out) as img:
        img.load()
        assert img.size == (64, 53)   # longest side 64, aspect of 96×80 kept
        assert img.mode == "RGB"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["content.png", "out.png", "style.jpg"]


def test_save_iter_writes_intermediates_and_print_iter_logs(images, tmp_path, capsys):
    content, style = images
    out = tmp_path / "out.jpg"
    code, _, stderr = run(capsys, "render", content, "-s", style, "-o", out, "--num-iterations", "4",
                          "--image-size", "64", "--save-iter", "2", "--print-iter", "2", "-q")
    assert code == 0
    assert (tmp_path / "out_2.jpg").is_file() and out.is_file()
    assert not (tmp_path / "out_4.jpg").exists()   # the last iteration is the output itself
    lines = stderr.splitlines()
    assert [line.split(":")[0] for line in lines] == ["iteration 2/4", "iteration 4/4"]
    assert all("content=" in line and "style=" in line and "tv=" in line and "total=" in line
               for line in lines)


def test_progress_bar_on_stderr_shows_losses(images, tmp_path, capsys):
    content, style = images
    code, stdout, stderr = run(capsys, "render", content, "-s", style, "-o", tmp_path / "o.png",
                               "--num-iterations", "2", "--image-size", "64", "--print-iter", "0")
    assert code == 0
    assert "2/2" in stderr and "total=" in stderr
    assert stdout.startswith("wrote ")


def test_two_styles_blend_and_init_image(images, tmp_path, capsys):
    content, style = images
    other = noise_image(tmp_path / "other.png", (64, 64), 2)
    out = tmp_path / "out.webp"
    code, _, stderr = run(capsys, "render", content, "-s", style, "-s", other, "-o", out, *FAST,
                          "--style-blend-weights", "3,1", "--init-image", other,
                          "--style-layers", "relu1_1,relu2_1", "--optimizer", "adam")
    assert (code, stderr) == (0, "")
    with Image.open(out) as img:
        assert img.size == (64, 53)


@pytest.mark.skipif(not (SHARED / "images").is_dir(), reason="../shared/images is not beside the repo")
def test_render_a_shared_portrait(tmp_path, capsys):
    out = tmp_path / "hopper.png"
    code, _, stderr = run(capsys, "render", SHARED / "images/content/grace_hopper.jpg",
                          "-s", SHARED / "images/style/starry_night.jpg", "-o", out, *FAST,
                          "--original-colors")
    assert (code, stderr) == (0, "")
    with Image.open(out) as img:
        assert max(img.size) == 64


def test_keyboard_interrupt_exits_130_without_output(images, tmp_path, capsys, monkeypatch):
    def interrupt(self, progress):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.ProgressReport, "__call__", interrupt)
    content, style = images
    out = tmp_path / "out.png"
    code, _, stderr = run(capsys, "render", content, "-s", style, "-o", out, *FAST)
    assert code == 130
    assert len(stderr.splitlines()) == 1 and "Traceback" not in stderr
    assert not out.exists()


# --- bad input: exit 2, one line, no output ------------------------------------------

def truncated(path: Path, fmt: str) -> Path:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(3).integers(0, 256, (80, 80, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format=fmt)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return path


def huge_png_header(path: Path, side=20_000) -> Path:
    """A valid PNG header (and an empty image body) claiming side×side pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b""))
                     + chunk(b"IEND", b""))
    return path


def wrong_shape_weights(path: Path) -> Path:
    import torch
    from safetensors.torch import save_file

    save_file({"conv1_1.weight": torch.zeros(64, 3, 5, 5), "conv1_1.bias": torch.zeros(64)}, str(path))
    return path


def tiny(path: Path) -> Path:
    Image.new("RGB", (20, 40), "white").save(path)
    return path


def white(path: Path) -> Path:
    Image.new("L", (64, 64), 255).save(path)
    return path


def black(path: Path) -> Path:
    Image.new("L", (64, 64), 0).save(path)
    return path


def not_an_image(path: Path) -> Path:
    path.write_text("not an image at all\n")
    return path


# name → (make(tmp) → {"content"/"style"/"output": path, "extra": [flags]}, words in the message)
BAD_INPUTS = {
    "missing content": (lambda t: {"content": t / "nope.png"}, "not found"),
    "not an image": (lambda t: {"content": not_an_image(t / "fake.png")}, "not an image"),
    "truncated png": (lambda t: {"content": truncated(t / "cut.png", "PNG")}, "truncated"),
    "truncated jpeg": (lambda t: {"style": truncated(t / "cut.jpg", "JPEG")}, "truncated"),
    "image under 32 px": (lambda t: {"style": tiny(t / "tiny.png")}, "too small"),
    "image over the pixel cap": (lambda t: {"content": huge_png_header(t / "huge.png")}, "pixel cap"),
    "unknown layer": (lambda t: {"extra": ["--style-layers", "relu1_1,relu9_9"]}, "relu9_9"),
    "negative weight": (lambda t: {"extra": ["--content-weight", "-1"]}, "content-weight"),
    "nan weight": (lambda t: {"extra": ["--style-weight", "nan"]}, "style-weight"),
    "nan blend weight": (lambda t: {"extra": ["--style-blend-weights", "nan"]}, "finite"),
    "blend count": (lambda t: {"extra": ["--style-blend-weights", "1,2"]}, "2 style blend weights"),
    "not a number": (lambda t: {"extra": ["--num-iterations", "many"]}, "invalid int"),
    "unknown model": (lambda t: {"extra": ["--model", "vgg99"]}, "vgg99"),
    "unknown option": (lambda t: {"extra": ["--style-wieght", "3"]}, "unrecognized"),
    "weights missing": (lambda t: {"extra": ["--weights", t / "none.safetensors"]}, "not found"),
    "weights wrong shape": (lambda t: {"extra": ["--weights", wrong_shape_weights(t / "w.safetensors")]},
                            "conv1_1"),
    "vgg19 not cached": (lambda t: {"extra": ["--model", "vgg19"]}, "--weights"),
    "output folder missing": (lambda t: {"output": t / "no" / "such" / "out.png"}, "does not exist"),
    "output extension unknown": (lambda t: {"output": t / "out.xyz"}, "unknown output format"),
    "no style": (lambda t: {"style": None}, "--style"),
    "face mask missing": (lambda t: {"extra": ["--portrait", "auto", "--face-mask", t / "no.png"]}, "not found"),
    "face mask not an image": (lambda t: {"extra": ["--face-mask", not_an_image(t / "m.png")]}, "not an image"),
    "face mask all black": (lambda t: {"extra": ["--face-mask", black(t / "m.png")]}, "no white"),
    "region mask, one style": (lambda t: {"extra": ["--mask", white(t / "m.png")]}, "at least two styles"),
    "portrait strength": (lambda t: {"extra": ["--portrait-strength", "2"]}, "portrait-strength"),
    "portrait mode unknown": (lambda t: {"extra": ["--portrait", "maybe"]}, "maybe"),
    "style loss unknown": (lambda t: {"extra": ["--style-loss", "wasserstein"]}, "wasserstein"),
    "sw projections negative": (lambda t: {"extra": ["--style-loss", "sw", "--sw-projections", "-1"]},
                                "sw-projections"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_no_output(case, images, tmp_path, capsys, monkeypatch):
    if case == "vgg19 not cached":
        monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    make, words = BAD_INPUTS[case]
    content, style = images
    spec = {"content": content, "style": style, "output": tmp_path / "out.png", "extra": []}
    spec.update(make(tmp_path))
    before = set(tmp_path.rglob("*"))
    argv = ["render", spec["content"], "-o", spec["output"], *FAST, *spec["extra"]]
    if spec["style"] is not None:
        argv += ["--style", spec["style"]]
    code, stdout, stderr = run(capsys, *argv)
    assert code == 2
    assert stderr.count("\n") == 1 and stderr.startswith("impasto: error: "), stderr
    assert words in stderr
    assert "Traceback" not in stderr and stdout == ""
    assert set(tmp_path.rglob("*")) == before   # no output, no intermediate, no temp file


# --- the parser ------------------------------------------------------------------------

def test_every_render_param_is_a_flag():
    help_text = cli.build_parser()._subparsers._group_actions[0].choices["render"].format_help()
    for name in RenderParams.model_fields:
        assert "--" + name.replace("_", "-") in help_text, name


def test_only_given_flags_reach_the_params():
    args = cli.build_parser().parse_args(
        ["render", "c.png", "-s", "s.png", "-o", "o.png", "--content-weight", "2",
         "--style-layers", "relu1_1, relu2_1", "--no-original-colors", "--init", "random"])
    given = cli.given_options(args, args.param_names)
    assert given == {"content_weight": 2.0, "style_layers": ["relu1_1", "relu2_1"],
                     "original_colors": False, "init": "random"}
    assert RenderParams.build(**given).num_iterations == RenderParams().num_iterations


def test_help_and_version(capsys):
    import importlib.metadata

    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"impasto {importlib.metadata.version('impasto')}"
    assert __version__ == importlib.metadata.version("impasto")
    assert cli.main(["render", "--help"]) == 0
    out = capsys.readouterr().out
    assert "example:" in out and "--style-weight" in out and "(default: 100.0)" in out
    assert cli.main([]) == 2
    assert capsys.readouterr().err.count("\n") == 1


# --- as a real process --------------------------------------------------------------------

def test_console_script_reports_one_line(tmp_path):
    bad = not_an_image(tmp_path / "photo.jpg")
    env = {**os.environ, "IMPASTO_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-m", "impasto.cli", "render", str(bad), "-s", str(bad),
                           "-o", str(tmp_path / "out.png")], capture_output=True, text=True, env=env,
                          timeout=120, check=False)
    assert proc.returncode == 2
    message = f"impasto: error: {bad}: not an image (or a format impasto cannot read)"
    assert proc.stderr.splitlines() == [message]
    assert not (tmp_path / "out.png").exists()


def test_progress_bar_restarts_when_the_count_does(tmp_path, capsys):
    """A coarse-to-fine render counts its iterations again at each scale."""
    import torch

    from impasto.engine import Progress

    report = cli.ProgressReport(tmp_path / "o.png", bar=True, print_every=0, save_every=0)
    for iteration, total in [(1, 2), (2, 2), (1, 3), (2, 3), (3, 3)]:
        report(Progress(iteration, total, {"total": 1.0}, 0.0, torch.zeros(1, 3, 4, 4)))
    assert (report.bar.n, report.bar.total) == (3, 3)
    report.close()
    assert "3/3" in capsys.readouterr().err


def test_sixteen_bit_png_is_refused_in_one_line_before_rendering(tmp_path, capsys):
    from impasto import cli as cli_module

    code = cli_module.main(["render", "sample:astronaut", "--style", "sample:coffee", "-o",
                            str(tmp_path / "out.png"), "--bit-depth", "16"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ".tif" in err[0]
    assert list(tmp_path.iterdir()) == []


# --- extras: the base install renders; serve and worker need theirs --------------------------

FAKE_REQUIRES = ["numpy>=1.26", 'fastapi>=0.110; extra == "shop"',
                 'no-such-distribution-impasto>=1; extra == "shop"',
                 'no-such-farm-distribution-impasto; extra == "farm"', 'redis>=5; extra == "farm"',
                 'impasto[shop,farm]; extra == "test"']


def test_require_extra_names_the_missing_distributions_and_the_install_line():
    from impasto.cli.common import UsageError, require_extra

    with pytest.raises(UsageError) as caught:
        require_extra("shop", "serve", requires=FAKE_REQUIRES)
    assert str(caught.value) == ("impasto serve needs the shop extra (missing: no-such-distribution-impasto): "
                                 "pip install 'impasto[shop]'")
    require_extra("shop", "serve", requires=FAKE_REQUIRES[:2])     # installed: no error
    require_extra("test", "x", requires=['pytest>=8; extra == "test"'])


FARM_ONLY = [r for r in FAKE_REQUIRES if "farm" in r]    # the shop's installed, the farm's not


@pytest.mark.parametrize(("argv", "requires", "extra"), [
    (["serve"], FAKE_REQUIRES, "shop"),
    (["worker", "--broker", "redis://h:6379/0"], FAKE_REQUIRES, "farm"),
    (["serve", "--broker", "redis://h:6379/0"], FARM_ONLY, "farm"),   # the shop publishes with Celery
])
def test_serve_and_worker_without_their_extra_say_which_to_install(argv, requires, extra, capsys, monkeypatch,
                                                                   tmp_path):
    import importlib.metadata

    monkeypatch.setattr(importlib.metadata, "requires", lambda name: requires)
    monkeypatch.setenv("IMPASTO_DATA_DIR", str(tmp_path))
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1
    assert f"needs the {extra} extra" in err and f"pip install 'impasto[{extra}]'" in err


def test_bash_completion_completes_commands_and_their_flags(capsys, tmp_path):
    import shutil

    assert cli.main(["completion", "bash"]) == 0
    script = tmp_path / "impasto.bash"
    script.write_text(capsys.readouterr().out)
    if shutil.which("bash") is None:
        pytest.skip("no bash here to run the completion in")

    def complete(*words: str) -> list[str]:
        line = " ".join(["impasto", *words])
        program = (f'source "{script}"; COMP_WORDS=(impasto {" ".join(words)}); COMP_CWORD={len(words)}; '
                   f'COMP_LINE="{line}"; COMP_POINT={len(line)}; _shtab_impasto impasto "{words[-1]}" impasto; '
                   'printf "%s\\n" "${COMPREPLY[@]}"')
        done = subprocess.run(["bash", "-c", program], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert complete("wor") == ["worker"]
    assert complete("worker", "--metr") == ["--metrics-port"]
    assert "--style-weight" in complete("render", "--style-w")          # derived from RenderParams


def test_completion_for_an_unknown_shell_is_one_line_exit_2(capsys):
    assert cli.main(["completion", "fish"]) == 2
    assert capsys.readouterr().err.startswith("impasto: error: argument shell")
