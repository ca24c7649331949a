"""``impasto sweep``: a grid of options and styles, scored, on a contact sheet; for one photo
or a batch of them (several PHOTOs or folders)."""

from __future__ import annotations

import argparse
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from impasto.cli.common import EXIT_INTERRUPTED, PROG, UsageError
from impasto.cli.options import METAVARS, given_options, unwrap_optional
from impasto.cli.render import format_losses

SWEEP_EXAMPLE = """\
example:
  impasto sweep portrait.jpg --style starry.jpg --style scream.jpg -o sweep-portrait \\
      --content-weight 1,5,10 --style-weight 50,100 --image-size 256 --num-iterations 200

  impasto sweep photos/ grace_hopper.jpg --preset starry --style scream.jpg -o sweep-batch \
      --style-weight 50,200 --image-size 256 --num-iterations 200

Every render option takes a comma-separated list of values to try (list options such as
--style-layers take ;-separated lists); each combination with each style is one cell.
One PHOTO: DIR gets cells/ID.png, index.json and index.csv (options and scores) and sheet.png.
Several PHOTOs or a folder (its images, sorted by name; other files are skipped with a note):
every photo gets the same grid, DIR/cells/ holds all cells, DIR/NAME/ each photo's sheet.png,
index.json and index.csv (NAME: the file's stem, with a digest where two stems clash), and
DIR/index.json, index.csv and index.png (a row of cells per photo, its best framed) the batch.
--max-cells counts the whole batch. Run the same command again to resume: finished cells
are kept, also across changed grids and photos."""


def add_sweep(commands, common: argparse.ArgumentParser) -> None:
    from impasto.engine.params import RenderParams
    from impasto.sweep import DEFAULT_MAX_CELLS

    sweep = commands.add_parser(
        "sweep", parents=[common], help="render a grid of options and styles, with a scored contact sheet",
        description="Render each PHOTO once per combination of the listed option values and styles; "
                    "score every cell and lay them out on labelled contact sheets.",
        epilog=SWEEP_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    sweep.add_argument("content", type=Path, nargs="+", metavar="PHOTO",
                       help="a photo, or a folder of photos; several make a batch")
    sweep.add_argument("-s", "--style", type=Path, action="append", default=[], metavar="STYLE",
                       help="a style image; repeat for several (each cell uses one)")
    sweep.add_argument("--preset", action="append", default=[], metavar="NAME",
                       help="a catalog style: its painting and its options, which flags given here "
                            "override; repeatable")
    sweep.add_argument("-o", "--output", type=Path, required=True, metavar="DIR",
                       help="the sweep folder (made if missing; an earlier sweep there is resumed)")
    sweep.add_argument("--max-cells", type=int, default=DEFAULT_MAX_CELLS, metavar="N",
                       help=f"refuse larger grids (default: {DEFAULT_MAX_CELLS})")
    sweep.add_argument("--tile", type=int, default=256, metavar="N",
                       help="thumbnail size on the contact sheets and the index sheet (default: 256)")
    group = sweep.add_argument_group("render options (a comma-separated list of values is swept)")
    sweep.set_defaults(handler=run_sweep, param_names=add_sweep_options(group, RenderParams))


def add_sweep_options(parser, model: type[BaseModel]) -> list[str]:
    """One text ``--flag`` per field (``sweep.parse_options`` splits and validates them)."""
    from impasto.sweep import NOT_SWEPT, is_list_field

    names = []
    for name, field in model.model_fields.items():
        if name in NOT_SWEPT:
            continue
        kind = unwrap_optional(field.annotation)
        if is_list_field(name):
            item = METAVARS[typing.get_args(kind)[0]]
            metavar = f"{item}[,{item}...][;...]"
        elif typing.get_origin(kind) is Literal:
            metavar = "|".join(map(str, typing.get_args(kind))) + "[,...]"
        else:
            extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
            metavar = extra.get("metavar") or {bool: "on|off"}.get(kind) or METAVARS.get(kind, "VALUE")
            metavar += "[,...]"
        default = field.get_default(call_default_factory=True)
        text = (field.description or name) + ("" if default is None else f" (default: {_shown(default)})")
        options: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "metavar": metavar,
                                   "help": text.replace("%", "%%")}
        if kind is bool:
            options.update(nargs="?", const="on")   # a bare --original-colors means on
        parser.add_argument("--" + name.replace("_", "-"), **options)
        names.append(name)
    return names


def _shown(default: Any) -> str:
    if isinstance(default, bool):
        return "on" if default else "off"
    return ",".join(map(str, default)) if isinstance(default, list) else str(default)


def run_sweep(args: argparse.Namespace) -> int:
    from impasto import sweep
    from impasto.batch import collect_photos

    options = sweep.parse_options(given_options(args, args.param_names))
    if not args.style and not args.preset:
        raise UsageError("give --style STYLE (repeatable) or --preset NAME")
    if args.tile < 64:
        raise UsageError(f"--tile {args.tile}: at least 64 px")
    inputs = collect_photos(args.content)
    # before loading anything: the count over the whole batch
    sweep.check_count(options, len(args.style) + len(args.preset), args.max_cells, photos=len(inputs.photos))
    folder = sweep.check_folder(args.output)
    if inputs.batch:
        return run_batch(args, options, inputs, folder)
    return _run_one(args, options, inputs.photos[0], folder)


def _run_one(args: argparse.Namespace, options, photo: str, folder: Path) -> int:
    from impasto import imaging, sweep

    content = imaging.load(photo)
    grid = sweep.build_grid(options, content, _sweep_styles(args), photo=photo, max_cells=args.max_cells)
    runner = sweep.Sweep(grid, content, folder, tile=args.tile)
    todo = len(runner.pending())
    records = _run_under_bar(runner, args.quiet, folder,
                             lambda: f"{len(grid.cells) - len(runner.pending())} of {len(grid.cells)} cells")
    if records is None:
        return EXIT_INTERRUPTED
    if not args.quiet:
        _sweep_summary(folder, records, todo)
    return 0


def _run_under_bar(runner, quiet: bool, folder: Path, done: Callable[[], str]):
    """``runner.run`` under the sweep's progress bar; None when interrupted, after one line
    saying how much is done (``done()``, asked after the interrupt) and how to resume."""
    bar = SweepBar(enabled=not quiet)
    try:
        return runner.run(bar)
    except KeyboardInterrupt:
        bar.close()
        print(f"{PROG}: interrupted; {done()} are done in {folder}; run the same command again to resume",
              file=sys.stderr)
        return None
    finally:
        bar.close()


def run_batch(args: argparse.Namespace, options, inputs, folder: Path) -> int:
    """Several photos × the grid: every photo read and every cell checked before any render."""
    from impasto import batch

    prepared = batch.prepare(inputs.photos, options, _sweep_styles(args), max_cells=args.max_cells,
                             tile=args.tile)
    if inputs.skipped and not args.quiet:   # after the checks, so a bad batch stays one line
        shown = ", ".join(Path(name).name for name in inputs.skipped[:5])
        more = f" and {len(inputs.skipped) - 5} more" if len(inputs.skipped) > 5 else ""
        what = "file that is not an image" if len(inputs.skipped) == 1 else "files that are not images"
        print(f"{PROG}: note: skipped {len(inputs.skipped)} {what}: {shown}{more}", file=sys.stderr)
    runner = batch.Batch(prepared, folder, tile=args.tile)
    todo = len(runner.pending())
    results = _run_under_bar(runner, args.quiet, folder,
                             lambda: f"{runner.done()} of {runner.cells()} cells of {_photos(len(prepared))}")
    if results is None:
        return EXIT_INTERRUPTED
    if not args.quiet:
        _batch_summary(folder, prepared, results, todo)
    return 0


def _batch_summary(folder: Path, photos: list, results: list[list[dict]], rendered: int) -> None:
    from impasto.batch import INDEX_SHEET
    from impasto.sweep import INDEX_CSV, INDEX_JSON, SHEET, best

    cells = sum(map(len, results))
    print(f"rendered {rendered} of {cells} cells for {_photos(len(photos))} ({cells - rendered} were done) "
          f"in {folder}")
    print(f"index sheet: {folder / INDEX_SHEET}   index: {folder / INDEX_JSON}, {folder / INDEX_CSV}")
    for photo, records in zip(photos, results):
        top = best(records)
        line = f"  {photo.name}: {folder / photo.name / SHEET}"
        if top is not None:
            line += (f"  best: {top['label']} (style {top['scores']['style']:.3f}, "
                     f"content {top['scores']['content']:.3f})")
        print(line)


def _photos(count: int) -> str:
    return f"{count} photo" if count == 1 else f"{count} photos"


def _sweep_styles(args: argparse.Namespace) -> list:
    from impasto import imaging
    from impasto.sweep import StyleChoice

    styles = [StyleChoice(path.stem.removeprefix(imaging.SAMPLE_PREFIX), str(path), imaging.load(path))
              for path in args.style]
    if args.preset:
        from impasto.catalog import Catalog

        catalog = Catalog()
        for name in args.preset:
            style = catalog.get(name)
            styles.append(StyleChoice(style.name, f"catalog:{style.name}", style.image(), style.preset))
    return styles


def _sweep_summary(folder: Path, records: list[dict], rendered: int) -> None:
    from impasto.sweep import CELLS, INDEX_CSV, INDEX_JSON, SHEET, best

    print(f"rendered {rendered} of {len(records)} cells ({len(records) - rendered} were done) in {folder}")
    print(f"sheet: {folder / SHEET}")
    print(f"index: {folder / INDEX_JSON}, {folder / INDEX_CSV}   cells: {folder / CELLS}")
    top = best(records)
    if top is not None:
        scores = top["scores"]
        print(f"best by style + content: {top['label']} (style {scores['style']:.3f}, "
              f"content {scores['content']:.3f}) {folder / top['image']}")


class SweepBar:
    """One progress bar over every cell a sweep (or a batch) renders: ``cell 3/8 · photo
    2/2``, and an ETA from the cells finished so far (tqdm's own, from iterations, would
    mislead where cells differ in size)."""

    def __init__(self, *, enabled: bool):
        self.enabled, self.bar = enabled, None

    def __call__(self, progress) -> None:
        if not self.enabled:
            return
        if self.bar is None:  # made on the first iteration, so errors before it stay one line
            from tqdm import tqdm

            self.bar = tqdm(total=progress.total, desc="sweep", unit="it", file=sys.stderr,
                            dynamic_ncols=True, bar_format=BAR_FORMAT)
        where = f"cell {progress.cell}/{progress.cells}"
        if progress.photos > 1:
            where += f" · photo {progress.photo}/{progress.photos}"
        eta = "" if progress.eta is None else f"ETA {format_seconds(progress.eta)} · "
        self.bar.set_description_str(where, refresh=False)
        self.bar.set_postfix_str(f"{eta}{progress.label}: {format_losses(progress.losses)}", refresh=False)
        self.bar.update(progress.iteration - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} it [{elapsed}{postfix}]"


def format_seconds(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h10m``."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
