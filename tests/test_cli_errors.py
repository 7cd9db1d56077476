"""What a user who gets things wrong sees: one line naming the argument or file and the fix, exit 2
(1 for failures at run time, 130 for Ctrl-C), no traceback; and nothing overwritten that attnscope did not write."""

import json
import shutil

import h5py
import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from attnscope import cli
from attnscope.cli import main
from attnscope.erasure.loaders import read_state_dict
from attnscope.errors import UnreadableFile
from attnscope.store import RunFile, RunWriter
from attnscope.store.schema import FORMAT_VERSION
from test_drift_cli import write_runs

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: threads only contend

TINY = ["--model", "tiny-sd", "--steps", "2", "--height", "64", "--width", "64", "--no-progress"]


def refused(capsys, argv: list[str], status: int = 2) -> str:
    """Run the command, expect ``status`` and exactly one line on stderr; return that line."""
    assert main(argv) == status
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def parse_refused(capsys, argv: list[str]) -> str:
    """An argument rejected while the command line is parsed: exit 2, one line."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    return err


@pytest.fixture(scope="module")
def run_file(tmp_path_factory, one_thread):
    """A tiny-sd run file with one run of "a wooden bench" (seed 0), and its image run-0.png."""
    path = tmp_path_factory.mktemp("runs") / "run.h5"
    assert main(["capture", "--prompt", "a wooden bench", *TINY, "--out", str(path)]) == 0
    return path


@pytest.mark.parametrize("argv, message", [
    (["capture", "--prompt", "p", "--steps", "0"], "argument --steps: 0 is not allowed: give a whole number of at least 1"),
    (["capture", "--prompt", "p", "--guidance", "nan"], "argument --guidance: nan is not a finite number"),
    (["capture", "--prompt", "p", "--guidance", "inf"], "argument --guidance: inf is not a finite number"),
    (["capture", "--prompt", "p", "--seed", "-1"], "argument --seed: -1 is out of range: seeds are 0 to 2**63-1 "
                                                   "(the run file keeps -1 for an unknown seed)"),
    (["capture", "--prompt", "p", "--width", "-64"], "argument --width: -64 is not allowed"),
    (["capture", "--prompt", "p", "--steps-captured", "1,x"], "argument --steps-captured: '1,x': give comma-separated"),
    (["capture", "--prompt", "p", "--resume", "--overwrite"], "argument --overwrite: not allowed with argument --resume"),
    (["leakage-report", "--erase", "bench", "--seeds", "0"], "argument --seeds: 0 is not allowed"),
    (["show", "run.h5", "--run", "-1"], "argument --run: -1 is negative"),
    (["show", "run.h5", "--out", "notes.txt"], "argument --out: notes.txt: the extension picks the format"),
    (["erase", "--concept", "bench", "--lambda", "0", "--out", "b.edit"], "argument --lambda: 0.0 is not allowed"),
    (["drift", "a.h5", "b.h5", "--word", "w", "--resamples", "0"], "argument --resamples: 0 is not allowed"),
])
def test_bad_values_are_refused_while_parsing(capsys, argv, message):
    assert message in parse_refused(capsys, argv)


def test_capture_never_overwrites_what_it_did_not_write(tmp_path, run_file, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    err = refused(capsys, ["capture", "--prompt", "a car", *TINY, "--out", str(notes), "--overwrite"])
    assert err.endswith(f"--out {notes} exists and is not an attnscope run file: it will not be overwritten; "
                        "choose another --out")
    assert notes.read_text() == "my notes"
    err = refused(capsys, ["capture", "--prompt", "a car", *TINY, "--out", str(run_file)])
    assert "already holds runs: pass --resume to add to it, --overwrite to replace it" in err
    assert "is a folder: give a file path" in refused(capsys, ["capture", "--prompt", "a", "--out", str(tmp_path)])
    err = refused(capsys, ["capture", "--prompt", "a", "--out", str(notes / "run.h5")])
    assert f"cannot write in {notes} (not a writable folder)" in err
    err = refused(capsys, ["capture", "--prompt", "a", "--resume", "--out", str(tmp_path / "new.h5")])
    assert "does not exist yet; drop --resume" in err


def test_resume_skips_complete_runs_and_names_images_by_run(tmp_path, run_file, capsys):
    path = tmp_path / "run.h5"
    shutil.copy(run_file, path)
    shutil.copy(run_file.with_name("run-0.png"), tmp_path / "run-0.png")
    first_image = (tmp_path / "run-0.png").read_bytes()
    assert main(["capture", "--prompt", "a wooden bench", "--seed", "0", "--seed", "1", *TINY, "--out", str(path),
                 "--resume"]) == 0
    out = capsys.readouterr().out
    assert "skipping 1 run(s) already complete" in out and f"images: {tmp_path / 'run-1.png'}" in out
    assert (tmp_path / "run-0.png").read_bytes() == first_image  # the earlier run's image is kept
    with RunFile(path) as runs:
        assert list(runs.column("seed")) == [0, 1] and runs.complete.all()
    assert main(["capture", "--prompt", "a wooden bench", "--seed", "1", *TINY, "--out", str(path), "--resume"]) == 0
    with RunFile(path) as runs:
        assert len(runs) == 2  # nothing sampled again
    err = refused(capsys, ["capture", "--prompt", "a wooden bench", "--seed", "1", *TINY, "--steps", "3",
                           "--out", str(path), "--resume"])
    assert err.endswith(f"--resume {path}: its runs were captured with another number of steps; resume with the "
                        "same settings, or choose another --out")
    assert main(["capture", "--prompt", "a red car", *TINY, "--out", str(path), "--overwrite"]) == 0
    with RunFile(path) as runs:
        assert list(runs.column("prompt")) == ["a red car"]


@pytest.mark.parametrize("extra, message", [
    (["--tokens", "zebra"], "--tokens 'zebra' is not a word of the prompt(s) (words: a, bench, wooden)"),
    (["--tokens", "Wooden"], "--tokens 'Wooden' is not a word of the prompt(s) (words: a, bench, wooden); "
                             "the tokenizer lower-cases words: use --tokens wooden"),
    (["--tokens", "99"], "--tokens 99: positions [99] are outside 0..76"),
    (["--height", "65"], "--height 65 is not a multiple of 8 (the model's latent factor): use 64 or 72"),
    (["--steps-captured", "5"], "--steps-captured [5]: outside the 2 sampling steps (0..1)"),
])
def test_selections_that_do_not_fit_the_model_or_prompt_are_refused_before_sampling(tmp_path, capsys, extra, message):
    argv = ["capture", "--prompt", "a wooden bench", *TINY, *extra, "--out", str(tmp_path / "run.h5")]
    assert refused(capsys, argv).endswith(message)
    assert not (tmp_path / "run.h5").exists()


def test_captured_steps_are_checked_against_the_default_sampler_when_steps_are_not_given(tmp_path, capsys):
    """Without --steps the default sampler's step count (DPM-Solver++, 10 steps) bounds --steps-captured."""
    default = ["--model", "tiny-sd", "--height", "64", "--width", "64", "--no-progress"]
    out = tmp_path / "run.h5"
    err = refused(capsys, ["capture", "--prompt", "a wooden bench", *default, "--steps-captured", "10",
                           "--out", str(out)])
    assert err.endswith("--steps-captured [10]: outside the 10 sampling steps (0..9)")
    assert main(["capture", "--prompt", "a wooden bench", *default, "--steps-captured", "0,-1", "--out", str(out)]) == 0
    with RunFile(out) as runs:
        assert len(runs.schema.steps) == 2


def test_a_transformer_capture_resumes(tmp_path):
    """Resuming compares the file's image size with the model's default: a DiT has a transformer, not a UNet."""
    out = tmp_path / "run.h5"
    flux = ["--model", "tiny-flux", "--steps", "2", "--no-progress", "--out", str(out)]
    assert main(["capture", "--prompt", "a wooden bench", *flux]) == 0
    assert main(["capture", "--prompt", "a wooden bench", "--prompt", "a red car", *flux, "--resume"]) == 0
    with RunFile(out) as runs:
        assert list(runs.column("prompt")) == ["a wooden bench", "a red car"]


def test_a_prompt_longer_than_the_model_reads_is_refused(tmp_path, capsys):
    prompt = "a wooden bench " * 20  # about 160 tokens
    err = refused(capsys, ["capture", "--prompt", prompt, *TINY, "--out", str(tmp_path / "run.h5")])
    assert f"--prompt {prompt!r} is" in err and "tokens with start/end, the model reads at most 77: shorten it" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_refused(tmp_path, capsys):
    err = refused(capsys, ["capture", "--prompt", "a", "--device", "cuda", "--out", str(tmp_path / "r.h5")])
    assert err == "attnscope capture: error: --device cuda: this machine has no CUDA device; use --device cpu (or auto)"


def test_run_files_that_cannot_be_read_are_named(tmp_path, run_file, capsys):
    corrupt = tmp_path / "corrupt.h5"
    corrupt.write_bytes(run_file.read_bytes()[:300])
    err = refused(capsys, ["inspect", str(corrupt)])
    assert err.startswith(f"attnscope inspect: error: {corrupt} cannot be read as HDF5 (not a run file, or corrupt")
    newer = tmp_path / "newer.h5"
    shutil.copy(run_file, newer)
    with h5py.File(newer, "r+") as file:
        file.attrs["format_version"] = 99
    assert refused(capsys, ["inspect", str(newer)]).endswith(
        f"{newer} is run-file format version 99; this attnscope reads up to version {FORMAT_VERSION}: "
        "upgrade attnscope to read it")
    assert refused(capsys, ["show", str(run_file), "--run", "5", "--out", str(tmp_path / "f.png")]).endswith(
        f"run 5 is out of range: {run_file} holds runs 0 to 0")
    empty = tmp_path / "empty.h5"
    with RunFile(run_file) as runs, RunWriter(empty) as writer:
        writer.open(runs.schema)
    assert refused(capsys, ["show", str(empty), "--out", str(tmp_path / "f.png")]).endswith(
        f"{empty} holds no runs (was its capture stopped before the first batch?)")


def test_show_and_erase_refuse_to_overwrite(tmp_path, run_file, capsys):
    figure = tmp_path / "figure.png"
    assert main(["show", str(run_file), "--word", "wooden", "--out", str(figure)]) == 0
    assert "pass --overwrite to replace it" in refused(capsys, ["show", str(run_file), "--out", str(figure)])
    assert main(["show", str(run_file), "--word", "wooden", "--out", str(figure), "--overwrite"]) == 0
    notes = tmp_path / "notes.svg"
    notes.write_text("not a figure of mine")
    assert "is not a figure" in refused(capsys, ["show", str(run_file), "--out", str(notes), "--overwrite"])
    before = run_file.read_bytes()
    err = refused(capsys, ["erase", "--model", "tiny-sd", "--concept", "bench", "--out", str(run_file), "--overwrite"])
    assert err.endswith(f"--out {run_file} exists and is not an attnscope edit file: attnscope will not overwrite it; "
                        "choose another --out")
    assert run_file.read_bytes() == before
    edit = tmp_path / "bench.edit"
    assert main(["erase", "--model", "tiny-sd", "--concept", "bench", "--out", str(edit)]) == 0
    assert "pass --overwrite" in refused(capsys, ["erase", "--model", "tiny-sd", "--concept", "bench", "--out", str(edit)])


def test_erase_refuses_concepts_the_model_cannot_read(tmp_path, capsys):
    out = str(tmp_path / "e.edit")
    assert refused(capsys, ["erase", "--concept", "zebra", "--out", out]).endswith(
        "--concept 'zebra': 'zebra' not in the model's vocabulary (it would become <unk>); use words the model knows")
    assert refused(capsys, ["erase", "--concept", "", "--out", out]).endswith(
        "--concept '' is empty: name a concept, e.g. --concept bench")
    assert refused(capsys, ["erase", "--concept", "bench", "--preserve", "unicorn", "--out", out]).endswith(
        "--preserve 'unicorn': 'unicorn' not in the model's vocabulary (it would become <unk>); use words the model knows")


def test_corrupt_edit_and_weights_files_are_named(tmp_path, capsys):
    broken = tmp_path / "broken.edit"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    err = refused(capsys, ["capture", "--prompt", "a", *TINY, "--edit", str(broken), "--out", str(tmp_path / "r.h5")])
    assert f"{broken} is not a readable edit file (not safetensors, or corrupt/truncated)" in err
    weights = tmp_path / "erased-unet"  # a safetensors release saved without its extension
    save_file({"down.weight": torch.ones(2, 2)}, str(weights))
    assert torch.equal(read_state_dict(weights)["down.weight"], torch.ones(2, 2))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x00" * 32)
    with pytest.raises(UnreadableFile, match=f"{junk} is not a readable safetensors or torch state dict"):
        read_state_dict(junk)
    err = refused(capsys, ["erase", "--model", "tiny-sd", "--method", "checkpoint", "--weights", str(junk),
                           "--out", str(tmp_path / "c.edit")])
    assert f"{junk} is not a readable safetensors or torch state dict" in err


def test_leakage_report_refuses_an_out_that_is_not_its_folder(tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("x")
    assert "is a file: leakage-report writes a folder" in refused(
        capsys, ["leakage-report", "--erase", "bench", "--out", str(notes)])
    assert "is a folder with other content" in refused(
        capsys, ["leakage-report", "--erase", "bench", "--out", str(tmp_path)])


def test_drift_refuses_an_edited_before_file_and_warns_about_one_prompt(tmp_path, capsys):
    one = {s: {} for s in (0, 1)}
    write_runs(tmp_path / "before.h5", one)
    write_runs(tmp_path / "after.h5", one)
    edited = tmp_path / "edited.h5"
    shutil.copy(tmp_path / "before.h5", edited)
    with h5py.File(edited, "r+") as file:
        schema = json.loads(file.attrs["schema"])
        file.attrs["schema"] = json.dumps({**schema, "edit": {"edits": [{"method": "uce", "concepts": ["bench"]}]}})
    err = refused(capsys, ["drift", str(edited), str(tmp_path / "after.h5"), "--word", "wooden",
                           "--out", str(tmp_path / "d")])
    assert err.endswith(f"{edited} was captured with an edit (uce ['bench']): give the run file captured without "
                        "--edit first, then the edited one")
    assert main(["drift", str(tmp_path / "before.h5"), str(tmp_path / "after.h5"), "--word", "wooden",
                 "--resamples", "50", "--out", str(tmp_path / "d")]) == 0
    captured = capsys.readouterr()
    assert "warning: all 2 pairs share one prompt" in captured.err
    interval = json.loads((tmp_path / "d" / "drift.json").read_text())["binding"]["score"]["bench"]["difference"]
    assert np.isnan(interval["low"]) and np.isnan(interval["high"])


def test_interrupts_and_failures_at_run_time_end_in_one_line(monkeypatch, tmp_path, capsys):
    from attnscope.store import RunFile

    def interrupted(self, source):  # the library code a command calls is interrupted
        raise KeyboardInterrupt

    monkeypatch.setattr(RunFile, "__init__", interrupted)
    err = refused(capsys, ["inspect", "run.h5"], status=130)
    assert err == "attnscope inspect: interrupted; complete runs and files written so far are kept"

    def disk_full(self, source):
        raise OSError(28, "No space left on device", str(tmp_path / "run.h5"))

    monkeypatch.setattr(RunFile, "__init__", disk_full)
    err = refused(capsys, ["inspect", "run.h5"], status=1)
    assert err == f"attnscope inspect: failed (OSError): {tmp_path / 'run.h5'}: No space left on device"
    with pytest.raises(OSError):
        cli.main(["--debug", "inspect", "run.h5"])
    with pytest.raises(OSError):
        cli.main(["inspect", "run.h5", "--debug"])


def test_ctrl_c_during_a_capture_keeps_the_complete_runs(tmp_path, monkeypatch, capsys):
    from attnscope import sampling

    real, calls = sampling.sample_batch, []

    def interrupted_on_the_second_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(sampling, "sample_batch", interrupted_on_the_second_batch)
    path = tmp_path / "run.h5"
    argv = ["capture", "--prompt", "a red car", "--seed", "0", "--seed", "1", "--batch-size", "1", *TINY,
            "--out", str(path)]
    assert refused(capsys, argv, status=130).endswith("interrupted; complete runs and files written so far are kept")
    with RunFile(path) as runs:
        assert list(runs.column("seed")) == [0] and runs.complete.all()
    assert not path.with_name("run.h5.lock").exists()


def test_a_word_selection_that_keeps_nothing_of_a_prompt_is_refused_in_the_library_too():
    from attnscope.errors import UsageError
    from attnscope.hooks.selection import Selection

    texts = ["<|startoftext|>", "a", "wooden", "bench", "<|endoftext|>", "<|endoftext|>"]
    ids = [0, 5, 6, 7, 1, 1]
    selection = Selection(tokens=["wooden"])
    assert selection.resolve_tokens(ids, texts, 1) == [(2, "wooden", 1)]
    with pytest.raises(UsageError, match=r"tokens \['zebra'\] select no token of the prompt"):
        Selection(tokens=["zebra"]).resolve_tokens(ids, texts, 1)
    empty = ["<|startoftext|>", "<|endoftext|>"] + ["<|endoftext|>"] * 4
    assert selection.resolve_tokens([0, 1, 1, 1, 1, 1], empty, 1, required=False) == []  # a negative prompt
