"""runner.capture.capture_runs: what ``attnscope capture`` does, from Python."""

from dataclasses import replace

import pytest

from attnscope.errors import UsageError
from attnscope.hooks.selection import Selection
from attnscope.runner.capture import CaptureRequest, capture_runs
from attnscope.sampling import SamplerSettings
from attnscope.store import RunFile

pytestmark = pytest.mark.usefixtures("one_thread")


def test_runs_are_captured_with_their_images_and_a_resume_adds_only_new_ones(sd, tmp_path):
    request = CaptureRequest(["a red car"], seeds=[0, 1, 0], out=tmp_path / "run.h5",
                             settings=SamplerSettings(steps=2, height=64, width=64, scheduler="ddim"), progress=False)
    done = capture_runs(sd, request)
    assert (done.written, done.skipped, done.steps) == (2, 0, 2)  # the repeated seed is one run
    assert [p.name for p in done.images] == ["run-0.png", "run-1.png"] and all(p.exists() for p in done.images)

    assert done.timing.writing > 0 and done.timing.drain >= 0  # the run writer's seconds

    again = capture_runs(sd, replace(request, seeds=[0, 1, 2], resume=True))
    assert (again.written, again.skipped) == (1, 2) and [p.name for p in again.images] == ["run-2.png"]
    with RunFile(request.out) as runs:
        assert list(runs.column("seed")) == [0, 1, 2]
    assert capture_runs(sd, replace(request, resume=True)).timing is None  # nothing left to sample


def test_the_user_hears_when_sampling_waited_for_the_run_writer(sd, tmp_path):
    request = CaptureRequest(["a red car"], out=tmp_path / "run.h5",
                             settings=SamplerSettings(steps=2, height=64, width=64), progress=False)
    done = capture_runs(sd, request)
    assert done.writer_note() is None  # a tiny capture never waits a second
    assert done.writer_note(worth_saying=0.0).startswith(f"sampling waited {done.timing.waited:.1f} s for the run writer")


def test_a_request_is_checked_against_the_model_before_sampling(sd, tmp_path):
    request = CaptureRequest(["a red car"], out=tmp_path / "run.h5", selection=Selection(steps=[5]),
                             settings=SamplerSettings(steps=2, height=64, width=64), progress=False)
    with pytest.raises(UsageError, match="outside the 2 sampling steps"):
        capture_runs(sd, request)
    assert not request.out.exists()


@pytest.mark.parametrize("steps, fits", [(1, True), (slice(0, 2), True), (-1, True), (2, False)])
def test_a_step_selection_may_be_an_index_or_a_slice(sd, tmp_path, steps, fits):
    request = CaptureRequest(["a red car"], out=tmp_path / "run.h5", selection=Selection(steps=steps),
                             settings=SamplerSettings(steps=2, height=64, width=64), progress=False)
    if not fits:
        with pytest.raises(UsageError, match="outside the 2 sampling steps"):
            capture_runs(sd, request)
        return
    assert capture_runs(sd, request).steps == len(range(2)[steps] if isinstance(steps, slice) else [steps])
