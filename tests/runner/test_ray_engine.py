"""`sapiens2 run --engine ray` on a small local Ray: the same results as the local engine (bad inputs included),
Parquet rows that match the documented schema, reruns that do only what is missing, and the stage runner's
failure rules. Ray starts once for the module (2 CPUs) and every job here is a handful of tiny images."""

from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from sapiens2.runner import ray_table as T  # noqa: E402
from sapiens2.runner.ray_stages import Failure, Stage, dataset_of, iter_rows, run_stages  # noqa: E402
from sapiens2.tasks.outputs import FILES  # noqa: E402
from sapiens2.task_table import TASKS  # noqa: E402
from tests.runner.conftest import DENSE_SIZE, cli, write_photo  # noqa: E402

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture(scope="module")
def local_ray(ray_session):
    """The session's local Ray (tests/conftest.py)."""


@pytest.fixture
def one_thread():
    """Each actor computes with the CPUs Ray gives it (one here); the local run then uses one too, or float
    sums of the forward pass would be added in another order (a last-digit difference in pose scores)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _mixed_folder(root: Path) -> list[Path]:
    """Three photos of different sizes, a truncated JPEG and a text file named .jpg."""
    good = [write_photo(root / "a" / f"p{i}.jpg", 44 + 10 * i, 36 + 4 * i, seed=i) for i in range(2)]
    good.append(write_photo(root / "b" / "p0.png", 50, 40, seed=5))  # same stem as a/p0.jpg, another folder
    data = good[0].read_bytes()
    (root / "a" / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "a" / "text.jpg").write_text("this is not a picture\n" * 4)
    return good


def _job(checkpoints, *extra) -> list:
    return ["run", "--tasks", "seg,pose", "--model", f"seg={checkpoints['seg']}", "--model",
            f"pose={checkpoints['pose']}", "--detector", "none", "--input-size", DENSE_SIZE, "--batch-size", "2",
            *extra]


def _rows(out: Path) -> list[dict]:
    shards = sorted((out / "results").glob("*.parquet"))
    return [r for s in shards for r in pq.read_table(s).to_pylist()]


def _errors(out: Path) -> set[tuple]:
    report = json.loads((out / "errors.json").read_text())
    return {(e["file"], e["stage"], e["reason"], e["error_type"]) for e in report["errors"]}


def test_ray_rows_hold_the_local_engines_results_and_errors(tmp_path, checkpoints, local_ray, one_thread, capsys):
    good = _mixed_folder(tmp_path / "in")
    local, rows_out, files_out = tmp_path / "local", tmp_path / "ray", tmp_path / "ray_files"
    saves = ["--save", "json,npz,png"]
    assert cli(*_job(checkpoints, *saves), tmp_path / "in", "--out", local) == 1
    local_log = capsys.readouterr().err
    assert cli(*_job(checkpoints, *saves), tmp_path / "in", "--out", rows_out, "--engine", "ray") == 1
    ray_log = capsys.readouterr().err

    # the same counts in the final summary, the same failures
    for log in (local_log, ray_log):
        assert re.search(r"done: 3 image\(s\)", log) and "failed: 2" in log
    assert _errors(rows_out) == _errors(local) and len(_errors(local)) == 2
    errors = pq.read_table(rows_out / T.ERRORS).to_pylist()
    assert {(e["file"], e["stage"]) for e in errors} == {(f, s) for f, s, _, _ in _errors(local)}

    rows = {r["name"]: r for r in _rows(rows_out)}
    assert sorted(rows) == ["a/p0", "a/p1", "b/p0"]
    for photo in good:
        row = rows[f"{photo.parent.name}/{photo.stem}"]
        prefix = local / photo.parent.name / photo.stem
        assert row["key"] == str(photo)
        # dense maps: the very bytes of the local files (npy and png), so array-equal
        assert row["seg.npy"] == Path(f"{prefix}_seg.npy").read_bytes()
        assert row["seg.png"] == Path(f"{prefix}_seg.png").read_bytes()
        np.testing.assert_array_equal(np.load(io.BytesIO(row["seg.npy"])), np.load(f"{prefix}_seg.npy"))
        assert (row["height"], row["width"]) == np.load(f"{prefix}_seg.npy").shape
        # pose: the JSON's own record as a struct, every value equal; the npz's arrays equal
        assert row["pose"] == json.loads(Path(f"{prefix}_pose.json").read_text())
        with np.load(io.BytesIO(row["pose.npz"])) as got, np.load(f"{prefix}_pose.npz") as want:
            for name in want.files:
                np.testing.assert_array_equal(got[name], want[name])
    assert json.loads((rows_out / "pose_keypoints.json").read_text()) == \
        json.loads((local / "pose_keypoints.json").read_text())

    # --maps files: the local engine's files themselves, beside the rows that name them
    assert cli(*_job(checkpoints, *saves), tmp_path / "in", "--out", files_out, "--engine", "ray",
               "--maps", "files") == 1
    listed = (files_out / ".sapiens2-outputs").read_text().split()  # never taken for inputs by a later run
    for row in _rows(files_out):
        for column in ("seg.npy", "seg.png", "pose.json", "pose.npz"):
            assert (files_out / row[column]).read_bytes() == (local / row[column]).read_bytes()
            assert row[column] in listed


def test_a_rerun_does_only_the_missing_rows(tmp_path, checkpoints, local_ray, capsys):
    photos = [write_photo(tmp_path / "in" / f"p{i}.jpg", 40, 32, seed=i) for i in range(4)]
    table = tmp_path / "inputs.parquet"  # inputs may come as a Parquet table of paths
    pq.write_table(pa.table({"path": [str(p) for p in photos]}), table)
    out = tmp_path / "out"
    job = ["seg", "--model", checkpoints["seg"], "--input-size", DENSE_SIZE, "--shard-rows", "1"]
    assert cli("run", "--tasks", *job, table, "--out", out, "--engine", "ray") == 0
    shards = sorted((out / "results").glob("*.parquet"))
    assert len(shards) == 4
    # a killed job: two shards never written, one left half-written under its temporary name
    lost = [pq.read_table(s).column("key")[0].as_py() for s in shards[:2]]
    shards[0].rename(shards[0].parent / f".{shards[0].name}.sapiens2-tmp")
    shards[1].unlink()
    capsys.readouterr()
    assert cli("run", "--tasks", *job, table, "--out", out, "--engine", "ray") == 0
    log = capsys.readouterr().err
    assert "done: 2 image(s)" in log and "skipped 2 already done" in log
    keys = [r["key"] for r in _rows(out)]
    assert sorted(keys) == sorted(str(p) for p in photos)  # every input once: the lost two, done again
    assert set(lost) <= set(keys)
    assert not list((out / "results").glob(".*"))  # the half-written shard is swept
    # a rerun asking for other columns is refused before any work
    assert cli("run", "--tasks", *job, "--save", "png", table, "--out", out, "--engine", "ray") == 2
    assert "holds rows of another run" in capsys.readouterr().err


def test_webdataset_shards_and_folder_uris_are_inputs(tmp_path, checkpoints, local_ray):
    photos = [write_photo(tmp_path / "in" / f"s{i}.jpg", 40, 30, seed=i) for i in range(2)]
    shard = tmp_path / "shard-000.tar"
    with tarfile.open(shard, "w") as tar:
        for p in photos:
            tar.add(p, arcname=f"{p.stem}.jpg")
        info = tarfile.TarInfo("s9.jpg")  # a broken member fails alone
        info.size = 5
        tar.addfile(info, io.BytesIO(b"nope!"))
    remote = write_photo(tmp_path / "bucket" / "deep" / "r0.png", 30, 40, seed=7)  # a folder URI, listed
    out, local = tmp_path / "out", tmp_path / "local"
    job = ["run", "--tasks", "seg", "--model", checkpoints["seg"], "--input-size", DENSE_SIZE, "--save", "npz"]
    assert cli(*job, shard, (tmp_path / "bucket").as_uri(), "--out", out, "--engine", "ray") == 1
    assert cli(*job, tmp_path / "in", "--out", local) == 0
    rows = {r["key"]: r for r in _rows(out)}
    for p in photos:
        assert rows[f"{shard}#{p.stem}.jpg"]["seg.npy"] == (local / f"{p.stem}_seg.npy").read_bytes()
    assert [e["file"] for e in json.loads((out / "errors.json").read_text())["errors"]] == [f"{shard}#s9.jpg"]
    assert np.load(io.BytesIO(rows[remote.as_uri()]["seg.npy"])).shape == (30, 40)


def test_the_schema_is_the_documented_one():
    every = tuple((t, info.saves) for t, info in TASKS.items())
    schema = T.TableSpec(every).schema()
    file_columns = [T.column_name(s) for t in TASKS for _, s in FILES[t] if s != "_pose.json"]
    assert schema.names == ["key", "name", "height", "width", *_with_pose(file_columns)]
    assert schema.field("pose").type == T.POSE_RECORD
    assert all(schema.field(c).type == pa.binary() for c in file_columns)
    files = T.TableSpec(every, maps="files").schema()
    assert files.field("seg.npy").type == pa.string() and "pose.json" in files.names
    # the module doc and the README name every column and the pose record's fields
    docs = (T.__doc__ or "") + README.read_text()
    for name in [*schema.names, *T.POSE_RECORD.names, *T.POSE_INSTANCE.names, "errors.parquet"]:
        assert f"`{name}`" in docs, name
    with pytest.raises(ValueError, match="--maps"):
        T.TableSpec(every, maps="zip")


def _with_pose(columns: list[str]) -> list[str]:
    i = columns.index("pose.npz")
    return [*columns[:i], "pose", *columns[i:]]


def test_written_shards_carry_the_schema_and_a_schema_mismatch_is_refused(tmp_path):
    spec = T.TableSpec((("seg", frozenset({"png"})),))
    name = T.write_shard([{"key": "k", "name": "n", "height": 2, "width": 3, "seg.png": b"x"}], tmp_path, spec)
    assert pq.read_schema(tmp_path / "results" / name).equals(spec.schema(), check_metadata=True)
    assert T.done_keys(tmp_path, spec) == {"k"}
    assert not list((tmp_path / "results").glob(".*"))  # no temporary left
    with pytest.raises(ValueError, match="another run"):
        T.done_keys(tmp_path, T.TableSpec((("seg", frozenset({"npz"})),)))


def _decode_maker():
    def decode(values):
        return [Failure("decode", "odd", "ValueError") if v % 2 else v * 10 for v in values]
    return decode


def _model_maker():
    def model(values):
        if 40 in values:
            raise RuntimeError("forty")
        return [v + 1 for v in values]
    return model


def test_stage_runner_isolates_failures_and_skips_failed_rows(local_ray):
    """The reusable runner: a Failure stops its row; a stage that raises fails only the culprit."""
    stages = [Stage("decode", _decode_maker, batch_size=3), Stage("inference", _model_maker, actors=1, batch_size=4)]
    rows = {r.key: r for r in iter_rows(run_stages(dataset_of([f"k{i}" for i in range(7)], list(range(7)), 3),
                                                   stages))}
    assert {k: r.value for k, r in rows.items() if r.failure is None} == {"k0": 1, "k2": 21, "k6": 61}
    assert rows["k1"].failure == Failure("decode", "odd", "ValueError")
    assert rows["k4"].failure == Failure("inference", "forty", "RuntimeError")


def test_missing_weights_and_bad_options_are_usage_errors_before_any_job(tmp_path, capsys):
    photo = write_photo(tmp_path / "in" / "p.jpg")
    assert cli("run", "--tasks", "seg", "--model", tmp_path / "none.safetensors", photo, "--engine", "ray",
               "--out", tmp_path / "out") == 2
    assert "none.safetensors: no such checkpoint file" in capsys.readouterr().err
    assert cli("run", "--tasks", "seg", photo, "--engine", "ray", "--maps", "files", "--out", "s3://b/x") == 2
    assert "on a local --out only" in capsys.readouterr().err
    assert not (tmp_path / "out" / "results").exists()


def test_progress_lines_give_rows_per_second_and_time_left():
    from sapiens2.runner.ray_engine import RateLog

    now, lines = [0.0], []
    log = RateLog(10, every=5.0, echo=lines.append, clock=lambda: now[0])
    for t in (1.0, 2.0, 6.0, 7.0):
        now[0] = t
        log.update(1)
    assert lines == ["progress: 3/10 rows, 0.50 rows/s, ETA 0:00:14"]
    now[0] = 8.0
    log.update(6)
    assert lines[-1] == "progress: 10/10 rows, 1.25 rows/s, ETA 0:00:00"
