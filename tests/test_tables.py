"""Tables on disk: one writer (CSV and Parquet through pandas), typed records, the run index."""

import math

import numpy as np
import pandas as pd

from attnscope import capture
from attnscope.sampling import Job, SamplerSettings, generate
from attnscope.store.reader import index_runs
from attnscope.store.tables import read_records, table_text, write_table, write_tables

ROWS = [
    {"prompt_id": "car", "seed": 0, "judged_yes": True, "text_similarity": 0.25, "attr_distance": 1},
    {"prompt_id": "bird", "seed": 1, "judged_yes": False, "text_similarity": math.nan},  # no attr_distance
]


def test_a_table_keeps_its_cells_and_leaves_gaps_empty(tmp_path):
    path = write_table(ROWS, tmp_path / "records.csv")
    assert path.read_text().splitlines() == [
        "prompt_id,seed,judged_yes,text_similarity,attr_distance",
        "car,0,True,0.25,1",  # an int column with a gap stays ints
        "bird,1,False,,",
    ]
    assert table_text(ROWS[:1], ["seed", "prompt_id"], header=False) == "0,car\n"


def test_csv_and_parquet_hold_the_same_table(tmp_path):
    csv, parquet = write_tables(ROWS, tmp_path / "records")
    from_csv, from_parquet = pd.read_csv(csv), pd.read_parquet(parquet)
    assert list(from_parquet.columns) == list(from_csv.columns)
    assert from_parquet["seed"].tolist() == from_csv["seed"].tolist() == [0, 1]
    assert from_parquet["judged_yes"].tolist() == [True, False]
    assert pd.isna(from_parquet["attr_distance"][1]) and from_parquet["attr_distance"][0] == 1


def test_records_read_back_typed(tmp_path):
    records = read_records(write_table(ROWS, tmp_path / "records.csv"))
    assert records[0] == {"prompt_id": "car", "seed": 0, "judged_yes": True, "text_similarity": 0.25,
                          "attr_distance": 1}
    assert records[1]["judged_yes"] is False and math.isnan(records[1]["text_similarity"])
    assert records[1]["attr_distance"] == ""
    (tmp_path / "empty.csv").touch()
    assert read_records(tmp_path / "empty.csv") == []


def test_run_index_is_a_data_frame_of_runs_and_their_metadata(sd):
    settings = SamplerSettings(steps=2, height=64, width=64)
    jobs = [Job("a red car", 3, extra={"prompt_id": "car"}), Job("a blue bird", 4)]
    with capture(sd) as cap:
        generate(sd, jobs, settings, progress=False, cap=cap)
    index = cap.file.index()
    assert index[["run", "prompt", "seed", "complete", "has_image"]].values.tolist() == [
        [0, "a red car", 3, True, True], [1, "a blue bird", 4, True, True]]
    assert index["prompt_id"][0] == "car" and pd.isna(index["prompt_id"][1])
    assert index_runs(cap.file) == {("car", 3): 0}
    assert index_runs(cap.file, {"a blue bird": "bird"}) == {("car", 3): 0, ("bird", 4): 1}
    assert np.issubdtype(index["guidance_scale"].dtype, np.floating)


def test_parquet_keeps_a_column_of_mixed_cells_as_text(tmp_path):
    _, parquet = write_tables([{"attr_distance": 1}, {"attr_distance": ""}], tmp_path / "mixed")
    assert pd.read_parquet(parquet)["attr_distance"].tolist() == ["1", ""]
