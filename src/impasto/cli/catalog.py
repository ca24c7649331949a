"""``impasto preview`` (instant feed-forward looks) and ``impasto styles`` (the catalog)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from impasto.cli.common import Parser, UsageError
from impasto.cli.options import add_model_options, given_options


def add_preview(commands, common: argparse.ArgumentParser) -> None:
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


def add_styles(commands, common: argparse.ArgumentParser, params_model) -> None:
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
            print(f"{style.name:24} {style.title:24} {'starter' if style.starter else 'own':8} {options}".rstrip())
        if not catalog.names():
            print(f"no styles yet in {catalog.root}; add one with: impasto styles add NAME IMAGE")
    elif args.action == "show":
        style = catalog.get(args.name)
        print(json.dumps({"name": style.name, "title": style.title, "image": str(style.image_path),
                          "params": style.preset, "starter": style.starter, "provenance": style.provenance},
                         indent=2))
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
