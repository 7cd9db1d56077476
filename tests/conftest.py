"""Shared fixtures: tiny random pipelines with the real SD architectures."""

import importlib.util
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub; fail fast if code tries

import pytest  # noqa: E402
import torch  # noqa: E402

from attnscope.models import tiny_sd2_pipeline, tiny_sd_pipeline, tiny_sdxl_pipeline  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (run on the GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and on a shared CPU two threads thrash."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def sd():
    return tiny_sd_pipeline()


@pytest.fixture(scope="session")
def sd2():
    return tiny_sd2_pipeline()


@pytest.fixture(scope="session")
def sdxl():
    return tiny_sdxl_pipeline()


def seeded(*seeds: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(s) for s in seeds]


def benchmark(name: str):
    """The script ``benchmarks/{name}.py`` as a module (benchmarks are scripts, not a package)."""
    script = Path(__file__).parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
