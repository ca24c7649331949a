"""``impasto sweep``: a grid of options and styles, scored, on a contact sheet."""

from __future__ import annotations

import argparse
import sys
import typing
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

Every render option takes a comma-separated list of values to try (list options such as
--style-layers take ;-separated lists); each combination with each style is one cell.
DIR gets cells/ID.png, index.json and index.csv (options and scores) and sheet.png.
Run the same command again to resume: finished cells are kept, also across changed grids."""


def add_sweep(commands, common: argparse.ArgumentParser) -> None:
    from impasto.engine.params import RenderParams
    from impasto.sweep import DEFAULT_MAX_CELLS

    sweep = commands.add_parser(
        "sweep", parents=[common], help="render a grid of options and styles, with a scored contact sheet",
        description="Render PHOTO once per combination of the listed option values and styles; score "
                    "every cell and lay them out on a labelled contact sheet.",
        epilog=SWEEP_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    sweep.add_argument("content", type=Path, metavar="PHOTO", help="the photo")
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
                       help="thumbnail size on the contact sheet (default: 256)")
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
    from impasto import imaging, sweep

    options = sweep.parse_options(given_options(args, args.param_names))
    if not args.style and not args.preset:
        raise UsageError("give --style STYLE (repeatable) or --preset NAME")
    if args.tile < 64:
        raise UsageError(f"--tile {args.tile}: at least 64 px")
    sweep.check_count(options, len(args.style) + len(args.preset), args.max_cells)  # before loading
    folder = sweep.check_folder(args.output)
    content = imaging.load(args.content)
    grid = sweep.build_grid(options, content, _sweep_styles(args), photo=str(args.content),
                            max_cells=args.max_cells)
    runner = sweep.Sweep(grid, content, folder, tile=args.tile)
    todo = len(runner.pending())
    bar = SweepBar(enabled=not args.quiet)
    try:
        records = runner.run(bar)
    except KeyboardInterrupt:
        bar.close()
        done = len(grid.cells) - len(runner.pending())
        print(f"{PROG}: interrupted; {done} of {len(grid.cells)} cells are done in {folder}; "
              f"run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        bar.close()
    if not args.quiet:
        _sweep_summary(folder, records, todo)
    return 0


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
    """One progress bar over every cell a sweep renders."""

    def __init__(self, *, enabled: bool):
        self.enabled, self.bar = enabled, None

    def __call__(self, progress) -> None:
        if not self.enabled:
            return
        if self.bar is None:  # made on the first iteration, so errors before it stay one line
            from tqdm import tqdm

            self.bar = tqdm(total=progress.total, desc="sweep", unit="it", file=sys.stderr,
                            dynamic_ncols=True)
        self.bar.set_description_str(f"cell {progress.cell}/{progress.cells}", refresh=False)
        self.bar.set_postfix_str(f"{progress.label}: {format_losses(progress.losses)}", refresh=False)
        self.bar.update(progress.iteration - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
