"""The ``attnscope`` command: one sub-command per job.

Each sub-command lives in ``attnscope/commands/<name>.py`` and exposes
``add_parser(subparsers)`` and ``main(args) -> int``; modules are imported
only when their command runs, so ``attnscope --help`` is instant.

Failures end in one line on stderr and an exit status, never a traceback
(``--debug`` shows it): 2 for the user's mistakes (bad arguments, unusable
files; :class:`attnscope.errors.UserError`), 1 for failures at run time
(disk full, a writer that died), 130 for Ctrl-C.
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


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: what is wrong, and where the help is."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


_DEBUG_HELP = "show the full traceback of a failure"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="attnscope",
        description="See what concept erasure does inside a text-to-image diffusion model.",
    )
    parser.add_argument("--version", action="version", version=f"attnscope {__import__('attnscope').__version__}")
    parser.add_argument("--debug", action="store_true", help=_DEBUG_HELP)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _available().values():
        module.add_parser(subparsers)
    for sub in subparsers.choices.values():  # also after the command; SUPPRESS keeps the top-level value
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=_DEBUG_HELP)
    return parser


def _quiet_libraries() -> None:
    """Keep the terminal for attnscope's own output: no loading bars or advice from diffusers/transformers."""
    import transformers  # first: importing diffusers already makes transformers warn

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    import diffusers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()


def _message(error: BaseException) -> str:
    """One line for ``error``: a ``KeyError``'s text without its quotes, an ``OSError`` with its file."""
    if isinstance(error, KeyError) and error.args:
        text = str(error.args[0])
    elif isinstance(error, OSError) and error.filename and error.strerror:
        text = f"{error.filename}: {error.strerror}"
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())


def exit_status(error: BaseException) -> int:
    """2 for the user's mistakes, 130 for Ctrl-C, 1 for other failures at run time."""
    from attnscope.errors import UserError

    if isinstance(error, KeyboardInterrupt):
        return 130
    if isinstance(error, (UserError, FileNotFoundError, ValueError, KeyError)):
        return 2
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    prefix = f"attnscope {args.command}"
    try:
        _quiet_libraries()
        module = import_module(f"attnscope.commands.{COMMANDS[args.command]}")
        return int(module.main(args) or 0)
    except BrokenPipeError:  # output piped into `head` and the like, which stopped reading
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit flush cannot fail again
        return 1
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"{prefix}: interrupted; complete runs and files written so far are kept", file=sys.stderr)
        return 130
    except Exception as error:
        if args.debug:
            raise
        status = exit_status(error)
        kind = "error" if status == 2 else f"failed ({type(error).__name__})"
        print(f"{prefix}: {kind}: {_message(error)}", file=sys.stderr)
        return status


if __name__ == "__main__":
    sys.exit(main())
