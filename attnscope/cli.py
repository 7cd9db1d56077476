"""The ``attnscope`` command: one sub-command per job.

Each sub-command lives in ``attnscope/commands/<name>.py`` and exposes
``add_parser(subparsers)`` and ``run(args) -> int``; modules are imported
only when their command runs, so ``attnscope --help`` is instant.
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib import import_module

# sub-command -> module under attnscope.commands
COMMANDS = {
    "capture": "capture",
    "inspect": "inspect",
    "show": "show",
    "erase": "erase",
    "leakage-report": "leakage_report",
    "drift": "drift",
    "entangle": "entangle",
    "attribute": "attribute",
    "tradeoff": "tradeoff",
}


def _available() -> dict[str, object]:
    modules = {}
    for command, module in COMMANDS.items():
        try:
            modules[command] = import_module(f"attnscope.commands.{module}")
        except ModuleNotFoundError as error:
            if error.name != f"attnscope.commands.{module}":
                raise
    return modules


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attnscope",
        description="See what concept erasure does inside a text-to-image diffusion model.",
    )
    parser.add_argument("--version", action="version", version=f"attnscope {__import__('attnscope').__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _available().values():
        module.add_parser(subparsers)
    return parser


def _quiet_libraries() -> None:
    """Keep the terminal for attnscope's own output: no loading bars or advice from diffusers/transformers."""
    import transformers  # first: importing diffusers already makes transformers warn

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    import diffusers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet_libraries()
    module = import_module(f"attnscope.commands.{COMMANDS[args.command]}")
    try:
        return int(module.run(args) or 0)
    except BrokenPipeError:  # output piped into `head` and the like, which stopped reading
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush cannot fail again
        return 1
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as error:
        print(f"attnscope {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
