"""The shared pieces of a Tune stage without starting Ray: atomic files, result.json, the run dir, completion."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lrservice.config import ConfigError, config_from_dict
from lrservice.files import read_json_lines, write_atomic, write_json, write_parquet, write_text
from lrservice.stage import CONFIG_FILE, Stage, prepare_run_dir, restorable


def _config(**recommend):
    return config_from_dict({"task": {"steps": 50}, "recommend": {"name": "r", **recommend}})


def test_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path):
    path = write_text(tmp_path / "report.md", "old")

    def broken(tmp):
        open(tmp, "w").write("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, broken)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_json_is_sorted_and_indented_and_parquet_round_trips(tmp_path):
    write_json(tmp_path / "a" / "meta.json", {"b": 1, "a": [1, 2]})
    assert (tmp_path / "a" / "meta.json").read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}'
    table = pa.table({"step": [10, 20]})
    write_parquet(table, tmp_path / "parts" / "x.steps.parquet")
    assert pq.read_table(tmp_path / "parts" / "x.steps.parquet").equals(table)


def test_result_json_lines_skip_blank_and_cut_lines(tmp_path):
    path = tmp_path / "result.json"
    path.write_text('{"step": 10}\n\n{"step": 20}\n{"step": 3')  # the last line was cut by a crash
    assert read_json_lines(path) == [{"step": 10}, {"step": 20}]
    assert read_json_lines(tmp_path / "missing.json") == []


def test_run_dir_refuses_to_mix_runs_and_resumes_the_same_config(tmp_path):
    run_dir, lines = tmp_path / "r", []
    run_id = prepare_run_dir(run_dir, _config(), "recommend", resume=False, overwrite=False, log=lines.append)
    assert json.loads((run_dir / CONFIG_FILE).read_text())["run_id"] == run_id
    with pytest.raises(ConfigError, match=r"^recommend.name: 'r' already has results"):
        prepare_run_dir(run_dir, _config(), "recommend", resume=False, overwrite=False, log=lines.append)
    with pytest.raises(ConfigError, match="different task/recommend config"):
        prepare_run_dir(run_dir, _config(budget=7), "recommend", resume=True, overwrite=False, log=lines.append)
    assert prepare_run_dir(run_dir, _config(), "recommend", resume=True, overwrite=False, log=lines.append) == run_id
    (run_dir / "search").mkdir()
    prepare_run_dir(run_dir, _config(budget=7), "recommend", resume=False, overwrite=True, log=lines.append)
    assert not (run_dir / "search").exists()


def test_a_run_dir_written_before_the_stage_module_resumes(tmp_path):
    """recommend's config.json used to hold ``key`` and ``config`` but no ``run_id``."""
    config = _config()
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    plain = config.to_dict()
    (run_dir / CONFIG_FILE).write_text(json.dumps({"key": {"task": plain["task"], "recommend": plain["recommend"]},
                                                   "config": plain, "created": "2026-01-01T00:00:00"}))
    assert prepare_run_dir(run_dir, config, "recommend", resume=True, overwrite=False, log=lambda line: None) == "r"


def test_a_stage_is_complete_when_all_its_parts_exist_and_restorable_only_with_a_snapshot(tmp_path):
    stage = Stage(name="search", run_dir=tmp_path, trainable=None, param_space={}, label=str, outcome=str,
                  parts=("steps", "runs"), total=0)
    write_parquet(pa.table({"step": [1]}), stage.part("steps"))
    assert not stage.complete  # the runs part is written last and marks completion
    write_parquet(pa.table({"step": [1]}), stage.part("runs"))
    assert stage.complete and stage.part("runs") == tmp_path / "parts" / "search.runs.parquet"

    stage.path.mkdir()
    (stage.path / "tuner.pkl").write_bytes(b"")
    assert not restorable(stage.path)
    (stage.path / "experiment_state-2026-01-01_00-00-00.json").write_text("{}")
    assert not restorable(stage.path)  # killed before the searcher's state: a restore would rerun the grid
    (stage.path / "basic-variant-state-2026-01-01_00-00-00.json").write_text("{}")
    assert restorable(stage.path)


def test_progress_callback_pickles_whatever_its_log_is(monkeypatch):
    """Tune saves its callbacks with the experiment state. Ray code may replace ``builtins.print``
    (``ray.experimental.tqdm_ray``), after which the real ``print`` no longer pickles by name; a
    closure never does. The callback leaves its ``log`` out, and a restored copy prints."""
    import builtins
    import pickle

    from lrservice.stage import Progress

    lines = []
    for log in (print, lines.append, lambda line: lines.append(line)):
        original = builtins.print
        monkeypatch.setattr(builtins, "print", lambda *a, **k: original(*a, **k))
        restored = pickle.loads(pickle.dumps(Progress("eval", 3, 1, str, str, log)))
        monkeypatch.setattr(builtins, "print", original)
        assert (restored.name, restored.total, restored.done) == ("eval", 3, 0)
        assert callable(restored.log) and restored.log is not log
