"""Sub-commands of the ``attnscope`` command line (see ``attnscope.cli``)."""
