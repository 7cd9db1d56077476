"""``import attnscope as at``: the before/after workflow's names, documented, and the README's flow run as written."""

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import attnscope as at

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_flow() -> str:
    """The Python block under the README's "Before and after, in Python" heading."""
    section = README.read_text(encoding="utf-8").split("### Before and after, in Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_front_door_names_the_workflow_and_documents_its_arguments():
    for name in ("load_pipeline", "capture", "RunFile", "Edit", "erase_uce", "erase_rece", "Job",
                 "SamplerSettings", "generate", "drift_study"):
        assert name in at.__all__
    for name in at.__all__:
        if name != "__version__":
            assert "Args:" in inspect.getdoc(getattr(at, name)), name


def test_importing_the_front_door_loads_no_heavy_library():
    probe = ("import sys, attnscope; "
             "print(sorted(m for m in ('torch', 'diffusers', 'transformers', 'h5py', 'pandas') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.usefixtures("one_thread")
def test_the_readme_before_after_flow_runs_on_the_built_in_model(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    names: dict = {}
    exec(compile(readme_flow(), str(README), "exec"), names)
    study = names["study"]
    assert study.word == "wooden" and study.objects == ("bench", "bird") and len(study.pairs) == 2
    assert (tmp_path / "before.h5").exists() and (tmp_path / "after.h5").exists()
    assert names["heat"].shape == (64, 64)
