"""``impasto completion bash|zsh|tcsh``: the shell's tab completion script, made by ``shtab``.

The script is derived from the parser itself, so every command and every flag (the render
options included, derived from ``RenderParams``) completes without being listed here.
"""

from __future__ import annotations

import argparse

SHELLS = ("bash", "zsh", "tcsh")
COMPLETION_EPILOG = """\
Install it once:
  bash:  impasto completion bash > ~/.local/share/bash-completion/completions/impasto
  zsh:   impasto completion zsh > "${fpath[1]}/_impasto"     (then: compinit)
  tcsh:  impasto completion tcsh > ~/.impasto.csh; echo 'source ~/.impasto.csh' >> ~/.tcshrc"""


def add_completion(commands, common: argparse.ArgumentParser) -> None:
    completion = commands.add_parser(
        "completion", parents=[common], help="print the tab completion script of a shell",
        description="Print the tab completion script of SHELL for impasto's commands and flags.",
        epilog=COMPLETION_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    completion.add_argument("shell", choices=SHELLS, help="bash, zsh or tcsh")
    completion.set_defaults(handler=run_completion)


def run_completion(args: argparse.Namespace) -> int:
    import shtab

    from impasto.cli import build_parser

    print(shtab.complete(build_parser(), shell=args.shell), end="")
    return 0
