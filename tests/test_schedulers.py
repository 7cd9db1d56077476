"""Samplers by name: swapped in for one call, restored after, recorded in the run file."""

import pytest
import torch

from attnscope.hooks import capture
from attnscope.models.toy.pipeline import ToyModelConfig, build_toy_pipeline
from attnscope.sampling import Job, SamplerSettings, generate
from attnscope.schedulers import FAST_STEPS, SCHEDULERS, make_scheduler, resolve, scheduler_of


@pytest.fixture(scope="module")
def pipe():
    pipe = build_toy_pipeline(ToyModelConfig.tiny())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_named_schedulers_keep_the_models_noise_schedule(pipe):
    for name in SCHEDULERS:
        scheduler = make_scheduler(name, pipe.scheduler)
        assert scheduler.config.prediction_type == pipe.scheduler.config.prediction_type
        assert torch.equal(scheduler.alphas_cumprod, pipe.scheduler.alphas_cumprod)
    with pytest.raises(ValueError, match="unknown scheduler 'euler'"):
        make_scheduler("euler", pipe.scheduler)


def test_auto_takes_the_fast_sampler_only_where_it_fits(pipe):
    from diffusers import FlowMatchEulerDiscreteScheduler

    assert SamplerSettings(steps=None, scheduler="auto").for_pipeline(pipe) == SamplerSettings(
        steps=FAST_STEPS, scheduler="dpm++")
    assert SamplerSettings(steps=30, scheduler="auto").for_pipeline(pipe).steps == 30

    class FlowPipe:  # what SD3 and Flux have: a flow-matching scheduler, which DPM-Solver++ cannot replace
        scheduler = FlowMatchEulerDiscreteScheduler()

    assert resolve("auto", FlowPipe.scheduler) is None
    assert SamplerSettings(steps=None, scheduler="auto").for_pipeline(FlowPipe) == SamplerSettings(
        steps=None, scheduler=None)  # the model's own scheduler and step count
    with pytest.raises(ValueError, match="does not fit this model's FlowMatchEulerDiscreteScheduler"):
        resolve("dpm++", FlowPipe.scheduler)


def test_scheduler_is_swapped_for_the_block_and_restored_after_an_error(pipe):
    own = pipe.scheduler
    with pytest.raises(RuntimeError):
        with scheduler_of(pipe, "dpm++"):
            assert type(pipe.scheduler).__name__ == "DPMSolverMultistepScheduler"
            raise RuntimeError("sampling failed")
    assert pipe.scheduler is own
    with scheduler_of(pipe, None):
        assert pipe.scheduler is own


def test_generate_with_dpm_records_the_sampler_in_the_run_file(pipe):
    with capture(pipe) as cap:
        generate(pipe, [Job("a red car", 0)], SamplerSettings(steps=4, scheduler="dpm++"), progress=False, cap=cap)
    runs = cap.file
    assert runs.schema.sampler["scheduler"] == "DPMSolverMultistepScheduler"
    assert len(runs.schema.timesteps) == 4 and len(runs.steps) == 4
    assert type(pipe.scheduler).__name__ == "DDIMScheduler"  # the pipeline keeps its own


def test_capture_command_defaults_to_the_fast_sampler(monkeypatch, tmp_path):
    from attnscope import sampling
    from attnscope.cli import main

    asked = []

    def stop(pipe, jobs, settings, **options):  # what the command asks the sampler for, then Ctrl-C
        asked.append(settings)
        raise KeyboardInterrupt

    monkeypatch.setattr(sampling, "generate", stop)
    command = ["capture", "--model", "tiny-sd", "--device", "cpu", "--prompt", "a red car", "--no-progress"]
    assert main([*command, "--out", str(tmp_path / "fast.h5")]) == 130
    assert main([*command, "--scheduler", "model", "--steps", "50", "--out", str(tmp_path / "model.h5")]) == 130
    assert asked == [SamplerSettings(steps=None, scheduler="auto"), SamplerSettings(steps=50, scheduler=None)]
