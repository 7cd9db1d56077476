"""The `attnscope` process as a shell sees it: what start-up imports, output piped into `head`."""

import subprocess
import sys

CLI = [sys.executable, "-m", "attnscope.cli"]


def test_building_the_command_line_imports_neither_torch_nor_diffusers():
    probe = ("import sys; from attnscope import cli; cli.build_parser(); "
             "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_output_into_a_reader_that_stopped_ends_without_a_traceback(tmp_path):
    run = tmp_path / "run.h5"
    subprocess.run([*CLI, "capture", "--model", "tiny-sd", "--prompt", "a red car", "--steps", "2",
                    "--height", "64", "--width", "64", "--out", str(run)], check=True, capture_output=True)
    inspect = subprocess.Popen([*CLI, "inspect", str(run)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    inspect.stdout.close()  # like `| head -1` after its line: nobody reads any more
    errors = inspect.stderr.read().decode()
    assert inspect.wait() == 1 and "Traceback" not in errors
