"""``impasto render``: one portrait, with a progress bar, loss lines and resumable state."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from impasto.cli.common import UsageError
from impasto.cli.options import add_model_options, given_options

log = logging.getLogger(__name__)

RENDER_EXAMPLE = """\
example:
  impasto render portrait.jpg --style starry_night.jpg -o portrait-starry.png \\
      --image-size 384 --num-iterations 300 --style-weight 200

Options follow neural-style's flags (-content_weight → --content-weight); lists are
comma-separated (--style-layers relu1_1,relu2_1). Bad input exits with code 2."""


def add_render(commands, common: argparse.ArgumentParser) -> None:
    from impasto.engine.params import RenderParams
    from impasto.imaging import SAVE_FORMATS

    render = commands.add_parser(
        "render", parents=[common], help="stylise a photo with one or more style images",
        description="Stylise CONTENT with the style images (Gatys optimisation).",
        epilog=RENDER_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    render.add_argument("content", type=Path, metavar="CONTENT", help="the photo to stylise")
    render.add_argument("-s", "--style", type=Path, action="append", default=[], metavar="STYLE",
                        help="a style image; repeat to blend several (see --style-blend-weights)")
    render.add_argument("--preset", metavar="NAME",
                        help="a catalog style (impasto styles list): its painting, unless --style is "
                             "given, and its options, unless given again")
    render.add_argument("-o", "--output", type=Path, required=True, metavar="OUT",
                        help=f"output image ({', '.join(SAVE_FORMATS)})")
    render.add_argument("--bit-depth", type=int, choices=[8, 16], default=8,
                        help="bits per channel of the output; 16 needs a .tif/.tiff output (default: 8)")
    render.add_argument("--save-state", type=Path, metavar="FILE",
                        help="after each finished scale, save a resumable state (options + images)")
    render.add_argument("--resume", type=Path, metavar="FILE",
                        help="continue a saved state (e.g. a preview) to a larger --image-size or "
                             "--print-size; its options apply unless given again")
    group = render.add_argument_group("render options")
    render.set_defaults(handler=run_render, param_names=add_model_options(group, RenderParams))


def run_render(args: argparse.Namespace) -> int:
    from impasto import imaging
    from impasto.engine import render
    from impasto.engine.params import RenderParams
    from impasto.errors import OutputError
    from impasto.state import RenderState, load_state

    given = given_options(args, args.param_names)
    state = load_state(args.resume) if args.resume else None
    base = state.params.model_dump() if state else {}
    if args.preset:
        from impasto.catalog import Catalog

        preset = Catalog().get(args.preset)
        base = {**base, **preset.preset}
        args.style = args.style or [preset.image_path]
    if not args.style:
        raise UsageError("give --style STYLE (repeatable) or --preset NAME")
    params = RenderParams.build(**{**base, **given})
    params.blend_weights(len(args.style))  # a count mismatch fails before any loading
    output = imaging.check_writable(args.output)
    if args.bit_depth == 16 and output.suffix.lower() not in (".tif", ".tiff"):
        raise OutputError(f"{output}: 16-bit output is written as .tif/.tiff only")
    if args.save_state and not args.save_state.resolve().parent.is_dir():
        raise OutputError(f"{args.save_state}: folder {args.save_state.parent} does not exist")
    saved = RenderState(params, dict(state.scales) if state else {})
    content = imaging.load(args.content)
    styles = [imaging.load(path) for path in args.style]
    init = imaging.load(params.init_image) if params.init_image else None
    loud = not args.quiet
    report = ProgressReport(output, bar=loud,
                            print_every=params.print_iter if loud or "print_iter" in given else 0,
                            save_every=params.save_iter)
    try:
        result = render(content, styles, params, report, init_image=init,
                        resume=state.latest() if state else None,
                        on_scale=_state_saver(saved, args.save_state) if args.save_state else None)
    finally:
        report.close()
    imaging.save(result, output, dpi=params.dpi if params.print_size else None, bit_depth=args.bit_depth)
    if loud:
        print(f"wrote {output} ({result.shape[-1]}×{result.shape[-2]} px)")
    return 0


def _state_saver(state, path: Path):
    """on_scale callback: add the finished scale to ``state`` and write it to ``path``."""
    def save(size: int, image) -> None:
        state.scales[size] = image
        state.save(path)
    return save


class ProgressReport:
    """The render callback: progress bar, loss lines and intermediate images."""

    def __init__(self, output: Path, *, bar: bool, print_every: int, save_every: int):
        self.output, self.want_bar = output, bar
        self.print_every, self.save_every = print_every, save_every
        self.bar = None

    def __call__(self, progress) -> None:
        from impasto import imaging

        i, losses = progress.iteration, format_losses(progress.losses)
        if self.want_bar:
            self._advance(progress, losses)
        if self.print_every and i % self.print_every == 0:
            self._write(f"iteration {i}/{progress.total}: {losses}")
        # The last iteration is the output itself, written by the caller.
        if self.save_every and i % self.save_every == 0 and i < progress.total:
            path = imaging.save(progress.image(), intermediate_path(self.output, i))
            log.info("saved %s", path)

    def _advance(self, progress, losses: str) -> None:
        # Made on the first iteration, so errors before it stay one line; restarted when
        # the count starts again (a new scale of a coarse-to-fine render).
        if self.bar is None or progress.iteration <= self.bar.n:
            from tqdm import tqdm

            self.close()
            self.bar = tqdm(total=progress.total, desc="render", unit="it", file=sys.stderr,
                            dynamic_ncols=True)
        self.bar.set_postfix_str(losses, refresh=False)
        self.bar.update(progress.iteration - self.bar.n)

    def _write(self, line: str) -> None:
        from tqdm import tqdm

        tqdm.write(line, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def format_losses(losses: dict[str, float]) -> str:
    return " ".join(f"{name}={value:.3g}" for name, value in losses.items())


def intermediate_path(output: Path, iteration: int) -> Path:
    """``out.png`` → ``out_100.png`` beside it, as neural-style names its -save_iter files."""
    return output.with_name(f"{output.stem}_{iteration}{output.suffix}")
