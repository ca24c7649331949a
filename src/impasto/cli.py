"""The ``impasto`` command: the only module that prints or exits.

Render options are derived from ``RenderParams`` (``add_model_options``): every field
becomes a ``--flag`` with its type, choices, description and default, so a new option in
the engine appears here without being re-typed. Every ``ImpastoError`` and every usage
error becomes one line ``impasto: error: …`` on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from impasto import __version__
from impasto.errors import ImpastoError

log = logging.getLogger(__name__)
PROG = "impasto"
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
_METAVARS = {int: "N", float: "X", str: "NAME", Path: "PATH"}

RENDER_EXAMPLE = """\
example:
  impasto render portrait.jpg --style starry_night.jpg -o portrait-starry.png \\
      --image-size 384 --num-iterations 300 --style-weight 200

Options follow neural-style's flags (-content_weight → --content-weight); lists are
comma-separated (--style-layers relu1_1,relu2_1). Bad input exits with code 2."""


class UsageError(Exception):
    """A command line argparse rejected; main() reports it like an ImpastoError."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are raised, so main() prints exactly one line."""

    def error(self, message: str) -> typing.NoReturn:
        raise UsageError(message)


# --- options derived from a pydantic model -------------------------------------------

def add_model_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup,
                      model: type[BaseModel], *, skip: Sequence[str] = ()) -> list[str]:
    """Add one ``--flag`` per field of ``model`` and return the field names added.

    Flags default to SUPPRESS, so the namespace holds only what the user typed and the
    model's own defaults (and validation) apply to the rest; see ``given_options``.
    """
    names = []
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        kind = _unwrap_optional(field.annotation)
        default = field.get_default(call_default_factory=True)
        text = field.description or name
        if default is not None:
            text += f" (default: {','.join(map(str, default)) if isinstance(default, list) else default})"
        options: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS,
                                   "help": text.replace("%", "%%")}
        options.update(_argparse_kind(kind))
        if isinstance(field.json_schema_extra, dict) and "metavar" in field.json_schema_extra:
            options["metavar"] = field.json_schema_extra["metavar"]
        parser.add_argument("--" + name.replace("_", "-"), **options)
        names.append(name)
    return names


def given_options(args: argparse.Namespace, names: Sequence[str]) -> dict[str, Any]:
    """The fields the user actually gave on the command line."""
    return {name: getattr(args, name) for name in names if hasattr(args, name)}


def _unwrap_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        kinds = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(kinds) == 1:
            return kinds[0]
    return annotation


def _argparse_kind(kind: Any) -> dict[str, Any]:
    """argparse's ``type``/``action``/``choices``/``metavar`` for one annotation."""
    origin = typing.get_origin(kind)
    if kind is bool:
        return {"action": argparse.BooleanOptionalAction}
    if origin is Literal:
        choices = list(typing.get_args(kind))
        return {"type": type(choices[0]), "choices": choices}
    if origin is list:
        (item,) = typing.get_args(kind)
        return {"type": _comma_list(item), "metavar": f"{_METAVARS[item]}[,{_METAVARS[item]}...]"}
    if kind in _METAVARS:
        return {"type": kind, "metavar": _METAVARS[kind]}
    raise TypeError(f"no command-line form for {kind!r}")  # a new field type: extend here


def _comma_list(item: type) -> Callable[[str], list]:
    def convert(text: str) -> list:
        return [item(part.strip()) for part in text.split(",")]

    convert.__name__ = f"comma-separated {item.__name__}"  # argparse names it in errors
    return convert


# --- the parser ------------------------------------------------------------------------

def build_parser() -> Parser:
    from impasto.engine.params import RenderParams
    from impasto.imaging import SAVE_FORMATS

    parser = Parser(prog=PROG, description="Neural style transfer portraits, from preview to print.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    common = Parser(add_help=False)
    common.add_argument("-v", "--verbose", action="count", default=0,
                        help="log more (-v: info, -vv: debug)")
    common.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bar and no loss lines (unless --print-iter is given)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                     parser_class=Parser)
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
    _add_preview(commands, common)
    _add_sweep(commands, common)
    _add_styles(commands, common, RenderParams)
    _add_serve(commands, common)
    _add_worker(commands, common)
    return parser


def _add_preview(commands, common: argparse.ArgumentParser) -> None:
    preview = commands.add_parser(
        "preview", parents=[common], help="instant feed-forward previews in several styles",
        description="Paint PHOTO in each style with a feed-forward network (a fraction of a second "
                    "per style on a CPU) and write a labelled contact sheet: for choosing a style "
                    "before the full render.")
    preview.add_argument("content", type=Path, metavar="PHOTO", help="the photo")
    preview.add_argument("-s", "--style", type=Path, action="append", default=[], metavar="STYLE",
                         help="a style image; repeat for several")
    preview.add_argument("--catalog", action="store_true", help="preview every style of the catalog too")
    preview.add_argument("-o", "--output", type=Path, required=True, metavar="SHEET",
                         help="the contact sheet (.png, .jpg, …)")
    preview.add_argument("--size", type=int, default=512, metavar="N",
                         help="longest side of each preview before thumbnailing (default: 512)")
    preview.add_argument("--tile", type=int, default=256, metavar="N", help="thumbnail size (default: 256)")
    preview.set_defaults(handler=run_preview)


def _add_styles(commands, common: argparse.ArgumentParser, params_model) -> None:
    styles = commands.add_parser("styles", parents=[common], help="the style catalog: add, list, show, remove",
                                 description="The style catalog ($IMPASTO_CATALOG_DIR, else the user data "
                                             "folder): a painting, a name and a tuned preset of render options.")
    actions = styles.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=Parser)
    add = actions.add_parser("add", help="add (or --replace) a style")
    add.add_argument("name", metavar="NAME", help="lower-case letters, digits, - and _")
    add.add_argument("image", type=Path, metavar="IMAGE", help="the painting")
    add.add_argument("--title", help="a display name (default: NAME)")
    add.add_argument("--replace", action="store_true", help="replace a style of the same name")
    add.set_defaults(param_names=add_model_options(add.add_argument_group("preset options"), params_model))
    actions.add_parser("list", help="list the styles")
    actions.add_parser("show", help="show one style's preset").add_argument("name", metavar="NAME")
    actions.add_parser("remove", help="remove a style").add_argument("name", metavar="NAME")
    styles.set_defaults(handler=run_styles)


def run_styles(args: argparse.Namespace) -> int:
    from impasto.catalog import Catalog

    catalog = Catalog()
    if args.action == "add":
        preset = {k: (str(v) if isinstance(v, Path) else v) for k, v in given_options(args, args.param_names).items()}
        style = catalog.add(args.name, args.image, preset, title=args.title, replace=args.replace)
        print(f"added {style.name} ({style.image_path})")
    elif args.action == "list":
        for style in catalog.all():
            options = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in style.preset.items())
            print(f"{style.name:24} {style.title:24} {options}")
        if not catalog.names():
            print(f"no styles yet in {catalog.root}; add one with: impasto styles add NAME IMAGE")
    elif args.action == "show":
        style = catalog.get(args.name)
        print(json.dumps({"name": style.name, "title": style.title, "image": str(style.image_path),
                          "params": style.preset}, indent=2))
    else:
        catalog.remove(args.name)
        print(f"removed {args.name}")
    return 0


def run_preview(args: argparse.Namespace) -> int:
    from impasto import imaging
    from impasto.engine.quick import QuickStylizer, contact_sheet

    output = imaging.check_writable(args.output)
    photo = imaging.load(args.content)
    styles = [(path.stem, imaging.load(path)) for path in args.style]
    if args.catalog:
        from impasto.catalog import Catalog

        styles += [(style.name, style.image()) for style in Catalog().all()]
    if not styles:
        raise UsageError("give --style STYLE (repeatable) or --catalog with styles in it")
    stylizer = QuickStylizer()
    tiles = [("photo", photo)] + [(name, stylizer.stylize(photo, style, size=args.size)) for name, style in styles]
    imaging.save(contact_sheet(tiles, tile=args.tile), output)
    if not args.quiet:
        print(f"wrote {output} ({len(styles)} styles)")
    return 0


# --- impasto render ----------------------------------------------------------------------

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


# --- impasto sweep -----------------------------------------------------------------------

SWEEP_EXAMPLE = """\
example:
  impasto sweep portrait.jpg --style starry.jpg --style scream.jpg -o sweep-portrait \\
      --content-weight 1,5,10 --style-weight 50,100 --image-size 256 --num-iterations 200

Every render option takes a comma-separated list of values to try (list options such as
--style-layers take ;-separated lists); each combination with each style is one cell.
DIR gets cells/ID.png, index.json and index.csv (options and scores) and sheet.png.
Run the same command again to resume: finished cells are kept, also across changed grids."""


def _add_sweep(commands, common: argparse.ArgumentParser) -> None:
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
        kind = _unwrap_optional(field.annotation)
        if is_list_field(name):
            item = _METAVARS[typing.get_args(kind)[0]]
            metavar = f"{item}[,{item}...][;...]"
        elif typing.get_origin(kind) is Literal:
            metavar = "|".join(map(str, typing.get_args(kind))) + "[,...]"
        else:
            extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
            metavar = extra.get("metavar") or {bool: "on|off"}.get(kind) or _METAVARS.get(kind, "VALUE")
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


# --- impasto serve ---------------------------------------------------------------------

SERVE_EPILOG = """\
Everything runs in this process: the web shop (FastAPI under uvicorn), a SQLite database,
local-file storage and render threads, all under $IMPASTO_DATA_DIR (default: the user
data folder). IMPASTO_* environment variables configure the rest (README: "The shop"):
IMPASTO_ADMIN_PASSWORD opens /admin, IMPASTO_SMTP_URL sends the emails,
IMPASTO_DATABASE_URL and IMPASTO_STORAGE_URL move data to PostgreSQL and S3."""


def _add_serve(commands, common: argparse.ArgumentParser) -> None:
    serve = commands.add_parser(
        "serve", parents=[common], help="run the shop: web app, database, storage and render threads",
        description="Serve the portrait shop on one machine, with no other server needed.",
        epilog=SERVE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000)")
    serve.add_argument("--workers", type=int, metavar="N",
                       help="render threads (default: $IMPASTO_WORKERS, else 1)")
    serve.add_argument("--broker", metavar="URL",
                       help="hand renders to the farm's workers over this broker (amqp:// or redis://) "
                            "instead of rendering here (default: $IMPASTO_BROKER_URL)")
    serve.set_defaults(handler=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    import socket

    from impasto.service.app import create_app

    settings = _serve_settings(args)
    try:   # a clear line now rather than uvicorn's traceback later
        with socket.create_server((args.host, args.port)):
            pass
    except OSError as exc:
        raise ImpastoError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    _migrate(settings)
    app = create_app(settings)
    admin = "" if settings.admin_password.get_secret_value() else " (closed until IMPASTO_ADMIN_PASSWORD is set)"
    print(f"impasto shop: {settings.public_url.rstrip('/')}/ — admin: {settings.public_url.rstrip('/')}/admin"
          f"{admin}; Ctrl-C stops", flush=True)
    import uvicorn

    uvicorn.run(app, host=args.host, port=args.port, proxy_headers=True,
                log_level="info" if args.verbose else "warning")
    return 0


def _serve_settings(args: argparse.Namespace):
    import os

    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    from impasto.config import Settings

    if not 0 < args.port < 65536:
        raise ImpastoError(f"--port must be 1..65535, not {args.port}")
    if args.workers is not None and args.workers < 1:
        raise ImpastoError(f"--workers must be at least 1, not {args.workers}")
    try:
        settings = Settings()
    except ValidationError as exc:
        error = exc.errors()[0]
        name = "IMPASTO_" + "_".join(str(part) for part in error["loc"][:1]).upper()
        raise ImpastoError(f"configuration: {name}: {error['msg']}") from None
    except SettingsError as exc:     # a value that is not valid JSON where JSON is expected
        raise ImpastoError(f"configuration: {exc} (IMPASTO_* variables)") from None
    updates: dict[str, Any] = {}
    if args.workers is not None:
        updates["workers"] = args.workers
    if args.broker:
        updates["broker_url"] = args.broker
    if not os.environ.get("IMPASTO_PUBLIC_URL"):
        host = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
        updates["public_url"] = f"http://{host if ':' not in host else f'[{host}]'}:{args.port}"
    return settings.model_copy(update=updates)


def _migrate(settings) -> None:
    from sqlalchemy.exc import SQLAlchemyError

    from impasto.service.db import migrate

    try:
        migrate(settings.resolved_database_url())
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise ImpastoError(f"database: {reason}") from None


# --- impasto worker ---------------------------------------------------------------------

WORKER_EPILOG = """\
One worker per device: on a machine with two GPUs run two, with --device cuda:0 and
--device cuda:1. A worker takes one job at a time; the broker hands the next queued job
to whichever worker is idle. Without --queues, a GPU with 8 GB or more renders previews
and prints, a smaller GPU or a CPU previews only. Every worker of a farm and the shop
use the same database, storage and catalog (IMPASTO_DATABASE_URL, IMPASTO_STORAGE_URL,
IMPASTO_CATALOG_DIR) and the same IMPASTO_PUBLIC_URL, for the links in the emails.
See docs/farm.md."""


def _add_worker(commands, common: argparse.ArgumentParser) -> None:
    worker = commands.add_parser(
        "worker", parents=[common], help="render the shop's jobs on this machine's device (a farm worker)",
        description="Run a render worker: take jobs from the broker's queues, render them on DEVICE, "
                    "store the results and record them in the job table.",
        epilog=WORKER_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    worker.add_argument("--broker", metavar="URL",
                        help="amqp://user:pass@host:5672/vhost or redis://host:6379/0 "
                             "(default: $IMPASTO_BROKER_URL)")
    worker.add_argument("--queues", type=_comma_list(str), metavar="QUEUE[,QUEUE]",
                        help="preview, print or both (default: from the device's memory)")
    worker.add_argument("--device", default="auto", metavar="DEVICE",
                        help="auto, cpu, cuda or cuda:N (default: auto: the first GPU, else the CPU)")
    worker.add_argument("--name", help="this worker's name in the admin (default: HOST:DEVICE:PID)")
    worker.add_argument("--database-url", metavar="URL", help="the job table (default: $IMPASTO_DATABASE_URL)")
    worker.add_argument("--storage-url", metavar="URL",
                        help="file:///path or s3://bucket/prefix (default: $IMPASTO_STORAGE_URL)")
    worker.add_argument("--memory-budget", metavar="BYTES",
                        help="a print's memory budget, e.g. 20GB (default: 85%% of the GPU's memory, "
                             "50%% of the RAM on a CPU)")
    worker.add_argument("--lease-seconds", type=float, metavar="S",
                        help="a job whose worker is silent this long is given to another (default: 300)")
    worker.set_defaults(handler=run_worker)


def run_worker(args: argparse.Namespace) -> int:
    from impasto.service import farm_worker
    from impasto.service.celery_app import check_broker_url, redact

    setup_logging(args.verbose + (0 if args.quiet else 1))
    logging.getLogger("impasto").propagate = False   # Celery logs to the root logger too: say it once
    _handler.setFormatter(logging.Formatter(f"%(asctime)s {PROG}: %(levelname)s: %(processName)s: %(message)s"))
    settings = _farm_settings({"broker_url": args.broker, "database_url": args.database_url,
                               "storage_url": args.storage_url})
    if not settings.broker_url:
        raise UsageError("give --broker URL (or set IMPASTO_BROKER_URL)")
    check_broker_url(settings.broker_url)
    if args.memory_budget:
        from impasto.engine.memory import parse_bytes

        parse_bytes(args.memory_budget)
    if args.lease_seconds is not None and args.lease_seconds < 3:
        raise UsageError(f"--lease-seconds {args.lease_seconds}: at least 3")
    machine = farm_worker.detect_machine(args.device)
    config = farm_worker.WorkerConfig(
        name=args.name or farm_worker.default_name(machine), machine=machine,
        queues=farm_worker.choose_queues(machine, args.queues),
        budget=args.memory_budget or farm_worker.memory_budget(machine), settings=settings)
    if args.lease_seconds is not None:
        config.lease_seconds = args.lease_seconds
    if not args.quiet:
        print(f"impasto worker {config.name}: {machine.device}, {machine.memory_bytes / 2**30:.1f} GB, "
              f"queues {','.join(config.queues)}, broker {redact(settings.broker_url)}; "
              f"Ctrl-C stops after the current job", flush=True)
    celery_level = "INFO" if args.verbose >= 2 else "WARNING"
    return farm_worker.run_worker(config, loglevel=celery_level)


def _farm_settings(overrides: dict[str, Any]):
    from pydantic import ValidationError

    from impasto.config import Settings

    try:
        settings = Settings()
    except ValidationError as exc:
        error = exc.errors()[0]
        raise UsageError(f"configuration: IMPASTO_{str(error['loc'][0]).upper()}: {error['msg']}") from None
    return settings.model_copy(update={key: value for key, value in overrides.items() if value})


# --- entry point -----------------------------------------------------------------------

class _TqdmHandler(logging.Handler):
    """Log lines through tqdm.write, so they do not tear the progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # noqa: BLE001 - as logging.StreamHandler: never let logging kill a render
            self.handleError(record)


_handler = _TqdmHandler()
_handler.setFormatter(logging.Formatter(f"{PROG}: %(levelname)s: %(message)s"))


def setup_logging(verbosity: int) -> None:
    """impasto's own loggers to stderr: WARNING by default, -v INFO, -vv DEBUG."""
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logger = logging.getLogger("impasto")
    if _handler not in logger.handlers:  # main() may run many times in one process (tests)
        logger.addHandler(_handler)
    logger.setLevel(level)


def fail(message: str, code: int = EXIT_USAGE) -> int:
    first = str(message).strip().splitlines() or ["unknown error"]
    print(f"{PROG}: error: {first[0]}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status (the console script exits with it)."""
    try:
        args = build_parser().parse_args(argv)
        setup_logging(args.verbose)
        return args.handler(args)
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else 0
    except (UsageError, ImpastoError) as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; the output was not written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if _out_of_memory(exc):
            return fail(f"out of memory ({exc}); try a smaller --image-size", 1)
        raise  # anything else is a bug: keep its traceback


def _out_of_memory(exc: Exception) -> bool:
    torch = sys.modules.get("torch")
    cuda_oom = torch is not None and isinstance(exc, getattr(torch, "OutOfMemoryError", ()))
    return isinstance(exc, MemoryError) or cuda_oom


if __name__ == "__main__":
    sys.exit(main())
