"""`attnscope --help` and argument errors answer at once: building the parser imports no torch or diffusers."""

import subprocess
import sys


def test_building_the_command_line_imports_neither_torch_nor_diffusers():
    probe = ("import sys; from attnscope import cli; cli.build_parser(); "
             "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
