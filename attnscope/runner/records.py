"""Judge images and keep the answers as side-effect records in an append-only CSV.

One *record* per judged question, in the schema of
:mod:`attnscope.analyses.side_effects` (its docstring lists the columns) plus
the question's id and text, the judge's ``score`` and the ``state`` (file
stem) the image came from. Columns, in order: :data:`RECORD_COLUMNS`.

The :class:`Ledger` is the runner's memory of what has been judged: rows of a
batch go to disk in one write and are flushed, so a killed process leaves at
most a cut last line, which reopening drops.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from attnscope.datasets.see import PROMPT_COLUMNS, QUESTION_COLUMNS, SPLIT_COLUMNS, SplitRow
from attnscope.judges.base import ImageLike, Judge
from attnscope.runner.plan import Key
from attnscope.sampling import Job
from attnscope.store.tables import read_records, table_text, write_table

RUN_COLUMNS: tuple[str, ...] = ("method", "erased", "state", "seed", "judged_yes", "score")
RECORD_COLUMNS: tuple[str, ...] = (
    *PROMPT_COLUMNS, *SPLIT_COLUMNS, *(c for c in QUESTION_COLUMNS if c != "prompt_id"), *RUN_COLUMNS,
)


def judge_jobs(
    judge: Judge,
    jobs: Sequence[Job],
    images: Sequence[ImageLike],
    rows: Mapping[str, SplitRow],
    *,
    method: str,
    erased: str,
    state: str,
) -> list[dict[str, Any]]:
    """Ask every question of every job's prompt about its image; one record per answer.

    ``images[i]`` is job ``i``'s image (``(H, W, 3)`` uint8); ``rows`` maps
    prompt ids (``job.extra["prompt_id"]``) to split rows. All questions go to
    the judge in one call, each image object repeated for its questions.
    """
    images = list(images)  # one object per image, so a judge can tell repeats apart
    asked = [(i, q) for i, job in enumerate(jobs) for q in rows[job.extra["prompt_id"]].prompt.questions]
    answers = judge.answer([images[i] for i, _ in asked], [q.text for _, q in asked])
    records = []
    for (i, question), answer in zip(asked, answers):
        job = jobs[i]
        records.append({
            **rows[job.extra["prompt_id"]].to_row(),
            **question.to_row(),
            "method": method,
            "erased": erased,
            "state": state,
            "seed": int(job.seed),
            "judged_yes": bool(answer.yes),
            "score": round(float(answer.score), 6),
        })
    return records


def record_key(record: Mapping[str, Any]) -> Key:
    return str(record["prompt_id"]), int(record["seed"])


class Ledger:
    """The judged records of one model state (one rank), in a CSV that only grows.

    ``records`` holds the rows, ``done`` the (prompt_id, seed) of the jobs
    whose every question is recorded.

    ``expected`` gives, per (prompt_id, seed), how many questions make the
    job complete; rows of incomplete jobs found on opening are dropped (and
    the file rewritten without them), so those jobs are judged again.
    """

    def __init__(self, path: str | os.PathLike, expected: Mapping[Key, int]):
        self.path = Path(path)
        self.records: list[dict[str, Any]] = []
        if self.path.exists():
            self._load(expected)
        self.done: set[Key] = {record_key(r) for r in self.records}

    def _load(self, expected: Mapping[Key, int]) -> None:
        _drop_cut_line(self.path)
        records = read_records(self.path)
        counts: dict[Key, int] = {}
        for record in records:
            counts[record_key(record)] = counts.get(record_key(record), 0) + 1
        complete = {k for k, n in counts.items() if expected.get(k) == n}
        self.records = [r for r in records if record_key(r) in complete]
        if len(self.records) != len(records):
            self._rewrite()

    def _rewrite(self) -> None:
        write_table(self.records, self.path, RECORD_COLUMNS)

    def append(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Write ``records`` in one call and flush them to disk."""
        if not records:
            return
        new = not self.path.exists() or self.path.stat().st_size == 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8", newline="") as f:
            f.write(table_text(records, RECORD_COLUMNS, header=new))
            f.flush()
            os.fsync(f.fileno())
        self.records += [dict(r) for r in records]
        self.done |= {record_key(r) for r in records}


def _drop_cut_line(path: Path) -> None:
    """Truncate ``path`` after its last newline: a line cut by a killed writer has none yet."""
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end != len(data):
        os.truncate(path, end)


def read_ledgers(paths: Sequence[str | os.PathLike]) -> list[dict[str, Any]]:
    """All records of several ledgers (typed as :func:`attnscope.store.tables.read_records` types them)."""
    return [r for path in paths if Path(path).exists() for r in read_records(path)]

