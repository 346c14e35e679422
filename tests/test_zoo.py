"""The zoo against the record of official checkpoints (`../shared/spec/ZOO.md`), entry by entry."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from sapiens2.zoo import (
    CODE_FORMATS,
    DETECTOR,
    DETECTOR_LICENSE,
    FORMATS,
    MODELS,
    SAPIENS1_LICENSE,
    SAPIENS2_LICENSE,
    ModelInfo,
    find_model,
)


@dataclass(frozen=True)
class Row:
    """One row of ZOO.md's table, reduced to what the zoo must agree with."""

    generation: int
    task: str  # the zoo's task name
    keypoints: int | None
    size: str
    repo: str | None  # None: not on the hub
    file: str | None  # hub path, or for a local-only model its place in the local layout; None: no file exists
    format: str | None
    text: str


_TASKS = [  # ZOO.md task cell (prefix) -> (zoo task, keypoints)
    ("pose (308", ("pose", 308)), ("pose (17 / 133", ("pose", None)), ("pose (17", ("pose", 17)),
    ("pose (133", ("pose", 133)), ("foreground seg", ("foreground", None)), ("seg", ("seg", None)),
    ("person bbox", ("detect", None)), ("pretrain", ("pretrain", None)), ("normal", ("normal", None)),
    ("pointmap", ("pointmap", None)), ("albedo", ("albedo", None)), ("matting", ("matting", None)),
    ("depth", ("depth", None)),
]


def _format(cell: str) -> str | None:
    if cell.startswith("safetensors"):
        return "safetensors"
    if cell.startswith("pth"):
        return "pth"
    if cell.startswith("torchscript"):
        return "torchscript"
    if cell.startswith("bf16"):
        return "bfloat16"
    return None


def _ticked(cell: str) -> str | None:
    found = re.search(r"`([^`]+)`", cell)
    return found.group(1) if found else None


def zoo_rows(spec: Path) -> list[Row]:
    lines = (spec / "ZOO.md").read_text(encoding="utf-8").split("## Table", 1)[1].splitlines()
    rows = []
    for line in lines:
        if not line.startswith("| ") or line.startswith(("| generation", "|---")):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        generation_cell, task_cell, size, repo_cell, file_cell, format_cell = cells[:6]
        task, keypoints = next(v for k, v in _TASKS if task_cell.startswith(k))
        generation = 1 if "v1" in generation_cell else 2
        if task == "detect":
            generation = 2
        repo = _ticked(repo_cell) if not repo_cell.startswith("not found") else None
        # "not found ..." names no file, except for a model the reference only keeps locally
        file = _ticked(file_cell) if not file_cell.startswith("not found") or "expects local" in file_cell else None
        rows.append(Row(generation, task, keypoints, size, repo, file, _format(format_cell), line))
    return rows


@pytest.fixture(scope="module")
def rows(shared) -> list[Row]:
    found = zoo_rows(shared / "spec")
    assert len(found) > 90, "ZOO.md's table was not parsed"
    return found


def _entry_for(row: Row) -> ModelInfo | None:
    """The zoo entry with the row's hub repo and file (or, for a local-only row, its local file)."""
    for m in MODELS.values():
        if row.repo is not None and (m.repo, m.filename) == (row.repo, row.file):
            return m
        if row.repo is None and row.file is not None and not m.on_hub and m.local_relpath == row.file:
            return m
    return None


def test_every_published_checkpoint_is_in_the_zoo_as_recorded(rows):
    for row in rows:
        if row.file is None:
            continue
        m = _entry_for(row)
        assert m is not None, f"missing from the zoo: {row.text[:160]}"
        assert m.generation == row.generation, m.name
        assert m.task == row.task, m.name
        if row.keypoints is not None:
            assert m.keypoints == row.keypoints, m.name
        assert m.arch == (row.size if row.size != "-" else "rtmdet-m"), m.name
        assert m.format == row.format, m.name


def test_every_zoo_entry_is_a_recorded_checkpoint(rows):
    recorded = {_entry_for(r).name for r in rows if r.file is not None}
    assert set(MODELS) == recorded, sorted(set(MODELS) - recorded)


def test_checkpoints_recorded_as_unpublished_have_no_entry(rows):
    gone = [r for r in rows if r.file is None]
    assert {(r.generation, r.task, r.size) for r in gone} >= {(1, "pose", "2b"), (1, "seg", "2b")}
    for r in gone:
        same = [m.name for m in MODELS.values() if (m.generation, m.task, m.arch) == (r.generation, r.task, r.size)
                and (r.keypoints is None or m.keypoints == r.keypoints) and m.format == (r.format or m.format)
                and not (r.task == "pose" and r.keypoints is None and m.keypoints == 308)]
        if r.size == "0.3b-2b":  # the COCO bfloat16 programs: described, never published
            same = [m.name for m in MODELS.values() if m.repo == "noahcao/sapiens-pose-coco" and m.format == "bfloat16"]
        assert not same, f"{same} recorded as not published: {r.text[:120]}"


def test_albedo_is_local_only_with_the_reference_layout_names():
    albedo = [m for m in MODELS.values() if m.task == "albedo"]
    assert [m.arch for m in albedo] == ["0.4b", "0.8b", "1b", "5b"]
    for m in albedo:
        assert not m.on_hub and m.repo == "" and not m.hub_confirmed
        assert m.local_relpath == f"albedo/sapiens2_{m.arch}_albedo.safetensors"
        message = m.not_published_message("/ckpt/" + m.local_relpath)
        assert "not published" in message and f"/ckpt/{m.local_relpath}" in message


def test_detector_hub_file_and_local_name(rows):
    assert DETECTOR.repo == "facebook/sapiens-pose-bbox-detector"
    assert DETECTOR.filename == "rtmdet_m_8xb32-100e_coco-obj365-person-235e8209.pth"
    assert DETECTOR.local_relpath == "detector/rtmdet_m.pth"  # where the Sapiens2 docs put it, and we look
    # Either name finds it: the hub's, and the local layout's.
    assert find_model("rtmdet_m.pth") is DETECTOR
    assert find_model(DETECTOR.filename) is DETECTOR


def test_licences_per_generation(shared):
    notes = (shared / "spec" / "ZOO.md").read_text(encoding="utf-8")
    assert f"`facebook/sapiens-pose-bbox-detector` ({DETECTOR_LICENSE})" in notes
    for m in MODELS.values():
        if m.task == "detect":
            assert m.license == DETECTOR_LICENSE
        elif not m.on_hub:
            assert m.license == "unpublished"
        else:
            assert m.license == (SAPIENS1_LICENSE if m.generation == 1 else SAPIENS2_LICENSE), m.name


def test_formats_and_code_opt_in():
    assert {m.format for m in MODELS.values()} == set(FORMATS)
    for m in MODELS.values():
        assert m.needs_code == (m.basename.endswith(".pt2")), m.name
        assert m.needs_pickle == m.basename.endswith(".pth"), m.name
        if m.format in CODE_FORMATS:
            assert m.name.endswith(f"-{m.format}") and m.basename.endswith(f"_{m.format}.pt2")
    assert MODELS["sapiens-seg-foreground-1b-torchscript"].needs_code


def test_names_find_their_entry():
    for m in MODELS.values():
        assert find_model(m.name) is m
        assert find_model(m.basename) is m, m.name
        if m.repo.startswith("facebook/") and m.repo.removeprefix("facebook/") == m.name:
            assert find_model(m.repo) is m


def test_models_command_shows_format_and_licence(tmp_path, monkeypatch, capsys):
    from sapiens2.cli import main

    monkeypatch.setenv("SAPIENS_CHECKPOINT_ROOT", str(tmp_path))
    monkeypatch.setenv("SAPIENS_V1_CHECKPOINT_ROOT", str(tmp_path))
    assert main(["models"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert "licence" in lines["name"] and "format" in lines["name"]
    assert "Sapiens2 License" in lines["sapiens2-pose-0.4b"] and "safetensors" in lines["sapiens2-pose-0.4b"]
    assert "Apache-2.0" in lines["rtmdet-m-person"] and " pth " in lines["rtmdet-m-person"]
    assert "CC-BY-NC-4.0" in lines["sapiens-normal-2b-bfloat16"] and "bfloat16" in lines["sapiens-normal-2b-bfloat16"]
    assert "not published" in lines["sapiens2-albedo-1b"]


def test_missing_albedo_weights_say_they_are_not_published(tmp_path, monkeypatch):
    import sapiens2

    monkeypatch.setenv("SAPIENS_CHECKPOINT_ROOT", str(tmp_path))
    with pytest.raises(sapiens2.CheckpointNotFoundError) as e:
        sapiens2.load("sapiens2-albedo-0.4b", device="meta")
    assert "not published" in str(e.value) and str(tmp_path / "albedo" / "sapiens2_0.4b_albedo.safetensors") in str(e.value)


def test_a_downloaded_detector_is_found_where_the_loader_looks(tmp_path, monkeypatch):
    """`sapiens2 download rtmdet-m-person` stores the hub's file name in the Hugging Face cache; resolving the
    detector (what `Pose` does) finds it there, and a file at the local layout's place wins over it."""
    from huggingface_hub import constants

    from sapiens2.hub import resolve

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("SAPIENS_CHECKPOINT_ROOT", str(tmp_path / "root"))
    repo = tmp_path / "hub" / "models--facebook--sapiens-pose-bbox-detector"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    hub_file = snapshot / "rtmdet_m_8xb32-100e_coco-obj365-person-235e8209.pth"  # as published (ZOO.md)
    hub_file.write_bytes(b"weights")
    assert resolve("rtmdet-m-person") == (hub_file, DETECTOR)
    local = tmp_path / "root" / "detector" / "rtmdet_m.pth"
    local.parent.mkdir(parents=True)
    local.write_bytes(b"weights")
    assert resolve("rtmdet-m-person") == (local, DETECTOR)


def test_task_sizes_list_each_size_once():
    from sapiens2.zoo import task_sizes

    assert task_sizes("depth") == ["0.3b", "0.6b", "1b", "2b"]
    assert task_sizes("pose", 1) == ["0.3b", "0.6b", "1b", "2b"]  # 2b: the COCO models only
    assert task_sizes("pose", 2) == ["0.4b", "0.8b", "1b", "5b"]
    assert task_sizes("matting") == ["1b"]
