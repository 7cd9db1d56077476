"""The one error type for mistakes a user can fix.

A :class:`UserError` says, in one line, which file or argument is wrong and
what to do instead; the command line prints it without a traceback and exits
with status 2. Library code raises subclasses that also derive from the
built-in type a caller would expect (``ValueError``, ``IndexError``, ...), so
``except ValueError`` keeps working.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input or files: the message names it and the fix."""


class UsageError(UserError, ValueError):
    """An argument or option value that cannot work (out of range, not in the prompt, ...)."""


class FileRefused(UserError, FileExistsError):
    """An output path that holds something attnscope will not overwrite, or that cannot be written."""


class UnreadableFile(UserError, ValueError):
    """An input file that is missing, corrupt, or of the wrong kind or version."""


class RunIndexError(UserError, IndexError):
    """A run index outside the run file."""
