"""expand_inputs: files, nested folders, globs, list files, videos; missing inputs reported; stable order."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest

from sapiens2.io.inputs import (
    VIDEO_EXTENSIONS,
    ExpandedInputs,
    MissingInput,
    MissingInputsError,
    expand_inputs,
    is_video_path,
)


def touch(root: Path, *names: str) -> list[Path]:
    out = []
    for name in names:
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")  # contents are not opened by input expansion
        out.append(p)
    return out


def rel(paths: list[Path], root: Path) -> list[str]:
    return [p.relative_to(root).as_posix() for p in paths]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    touch(
        tmp_path,
        "shoot/a.jpg", "shoot/B.JPG", "shoot/c.Png", "shoot/d.tiff", "shoot/e.WebP", "shoot/notes.txt",
        "shoot/readme.md", "shoot/raw.heic", "shoot/.hidden.jpg", "shoot/.cache/f.jpg",
        "shoot/day1/g.jpeg", "shoot/day1/deep/er/h.bmp", "shoot/day1/clip.MP4", "shoot/day1/take.mov",
        "empty/readme.md",
    )
    return tmp_path


def test_folder_is_walked_recursively_with_any_case_and_no_hidden(tree: Path) -> None:
    got = expand_inputs(tree / "shoot")
    assert rel(got.images, tree) == [
        "shoot/a.jpg", "shoot/B.JPG", "shoot/c.Png", "shoot/d.tiff", "shoot/day1/deep/er/h.bmp",
        "shoot/day1/g.jpeg", "shoot/e.WebP",
    ]
    assert rel(got.videos, tree) == ["shoot/day1/clip.MP4", "shoot/day1/take.mov"]
    assert got.missing == []


def test_paths_are_absolute_and_normalised(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tree / "shoot")
    got = expand_inputs(["a.jpg", "day1/../B.JPG"])
    assert got.images == [tree / "shoot/a.jpg", tree / "shoot/B.JPG"]
    assert all(p.is_absolute() for p in got.images)


def test_natural_deterministic_order(tmp_path: Path) -> None:
    names = [f"seq/frame{i}.png" for i in (10, 2, 1, 33, 100, 3)] + ["seq/Frame2.png", "seq/frame02.png"]
    touch(tmp_path, *names)
    first = expand_inputs([tmp_path / "seq"]).images
    assert rel(first, tmp_path) == [
        "seq/frame1.png", "seq/Frame2.png", "seq/frame2.png", "seq/frame02.png", "seq/frame3.png",
        "seq/frame10.png", "seq/frame33.png", "seq/frame100.png",
    ]
    # the order does not depend on the order of the inputs
    shuffled = [tmp_path / n for n in reversed(names)]
    assert expand_inputs(shuffled).images == first


def test_duplicates_collapse(tree: Path) -> None:
    got = expand_inputs([tree / "shoot/a.jpg", tree / "shoot", str(tree / "shoot/*.jpg")])
    assert len(got.images) == len(set(got.images)) == 7


def test_globs(tree: Path) -> None:
    got = expand_inputs(str(tree / "shoot/*.jpg"))
    assert rel(got.images, tree) == ["shoot/a.jpg"]  # case-sensitive like the shell; hidden not matched
    got = expand_inputs(str(tree / "shoot/**/*.jp*g"))
    assert rel(got.images, tree) == ["shoot/a.jpg", "shoot/day1/g.jpeg"]
    got = expand_inputs(str(tree / "shoot/day*"))  # a glob matching a folder walks it
    assert rel(got.images, tree) == ["shoot/day1/deep/er/h.bmp", "shoot/day1/g.jpeg"]
    assert len(got.videos) == 2


def test_glob_that_matches_nothing_is_reported(tree: Path) -> None:
    got = expand_inputs([str(tree / "shoot/*.gif"), str(tree / "shoot/*.md")])
    assert got.images == []
    assert [m.reason for m in got.missing] == [
        "glob pattern matched nothing", "glob pattern matched no images or videos",
    ]


def test_literal_name_with_glob_characters(tmp_path: Path) -> None:
    (p,) = touch(tmp_path, "shot[1].jpg")
    assert expand_inputs(str(p)).images == [p]


def test_missing_inputs_are_reported_and_the_rest_kept(tree: Path) -> None:
    got = expand_inputs([tree / "shoot/a.jpg", tree / "nope.jpg", tree / "empty", tree / "shoot/raw.heic",
                         tree / "shoot/readme.md", ""])
    assert rel(got.images, tree) == ["shoot/a.jpg"]
    reasons = {Path(m.input).name: m.reason for m in got.missing}
    assert reasons == {
        "nope.jpg": "no such file or folder",
        "empty": "folder contains no images or videos",
        "raw.heic": "not an image, video or .txt list (extension '.heic')",
        "readme.md": "not an image, video or .txt list (extension '.md')",
        "": "empty input",
    }
    assert all(m.source is None for m in got.missing)
    assert str(got.missing[0]) == f"{tree / 'nope.jpg'}: no such file or folder"


def test_strict_raises_one_error_listing_everything(tree: Path) -> None:
    with pytest.raises(MissingInputsError) as info:
        expand_inputs([tree / "x.jpg", tree / "y.jpg", tree / "shoot"], strict=True)
    assert [Path(m.input).name for m in info.value.missing] == ["x.jpg", "y.jpg"]
    assert "2 input(s) not found" in str(info.value) and "x.jpg" in str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    back = pickle.loads(pickle.dumps(info.value))
    assert back.missing == info.value.missing


def test_raise_if_missing_is_a_no_op_when_all_found(tree: Path) -> None:
    expand_inputs(tree / "shoot").raise_if_missing()
    with pytest.raises(MissingInputsError):
        ExpandedInputs(missing=[MissingInput("a", "gone")]).raise_if_missing()


def test_list_file(tree: Path) -> None:
    lists = tree / "lists"
    lists.mkdir()
    (lists / "batch.txt").write_text(
        "\ufeff# photos for the batch\n"
        "../shoot/a.jpg\n"
        "\n"
        "   ../shoot/day1   \n"
        f"{tree / 'shoot/c.Png'}\r\n"
        "../shoot/*.tiff\n"
        "  # an indented comment\n"
        "../shoot/gone.jpg\n",
        encoding="utf-8",
    )
    got = expand_inputs(lists / "batch.txt")
    assert rel(got.images, tree) == [
        "shoot/a.jpg", "shoot/c.Png", "shoot/d.tiff", "shoot/day1/deep/er/h.bmp", "shoot/day1/g.jpeg",
    ]
    assert rel(got.videos, tree) == ["shoot/day1/clip.MP4", "shoot/day1/take.mov"]
    assert got.missing == [MissingInput("../shoot/gone.jpg", "no such file or folder", f"{lists / 'batch.txt'}:8")]


def test_list_entries_are_relative_to_the_list_not_the_cwd(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tree / "shoot/day1/list.txt").write_text("g.jpeg\n")
    monkeypatch.chdir(tree)
    assert rel(expand_inputs("shoot/day1/list.txt").images, tree) == ["shoot/day1/g.jpeg"]


def test_nested_and_self_including_lists(tmp_path: Path) -> None:
    touch(tmp_path, "a.jpg", "b.jpg")
    (tmp_path / "inner.txt").write_text("b.jpg\nouter.txt\n")
    (tmp_path / "outer.txt").write_text("a.jpg\ninner.txt\n")
    got = expand_inputs(tmp_path / "outer.txt")
    assert rel(got.images, tmp_path) == ["a.jpg", "b.jpg"]
    assert [m.reason for m in got.missing] == ["list file includes itself (directly or through another list)"]
    assert got.missing[0].source == f"{tmp_path / 'inner.txt'}:2"


def test_empty_and_undecodable_lists_are_reported(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_text("# nothing yet\n\n")
    (tmp_path / "binary.txt").write_bytes(b"\xff\xfe\x00bad")
    got = expand_inputs([tmp_path / "empty.txt", tmp_path / "binary.txt"])
    assert got.images == []
    assert got.missing[0].reason.startswith("list file has no entries")
    assert got.missing[1].reason.startswith("cannot read list file")


def test_txt_files_inside_folders_are_not_lists(tmp_path: Path) -> None:
    touch(tmp_path, "d/a.jpg", "elsewhere/b.jpg")
    (tmp_path / "d/list.txt").write_text("../elsewhere/b.jpg\n")
    assert rel(expand_inputs(tmp_path / "d").images, tmp_path) == ["d/a.jpg"]


def test_explicit_hidden_file_is_accepted(tree: Path) -> None:
    assert rel(expand_inputs(tree / "shoot/.hidden.jpg").images, tree) == ["shoot/.hidden.jpg"]


def test_symlinked_folders_followed_once_without_loops(tmp_path: Path) -> None:
    touch(tmp_path, "real/a.jpg", "real/sub/b.jpg")
    (tmp_path / "real/sub/loop").symlink_to(tmp_path / "real", target_is_directory=True)
    (tmp_path / "view").symlink_to(tmp_path / "real", target_is_directory=True)
    got = expand_inputs(tmp_path / "view")
    assert rel(got.images, tmp_path) == ["view/a.jpg", "view/sub/b.jpg"]
    assert got.missing == []


def test_broken_symlink_reported(tmp_path: Path) -> None:
    (tmp_path / "x.jpg").symlink_to(tmp_path / "gone.jpg")
    assert expand_inputs(tmp_path / "x.jpg").missing[0].reason == "broken symbolic link"


def test_user_home_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    touch(tmp_path, "pics/a.jpg")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert rel(expand_inputs("~/pics").images, tmp_path) == ["pics/a.jpg"]


def test_video_extensions() -> None:
    assert {".mp4", ".mov", ".avi", ".webm", ".mkv"} <= VIDEO_EXTENSIONS
    assert is_video_path("a/B.MKV") and not is_video_path("a.jpg")


@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() == 0, reason="root can list any folder")
def test_unlistable_subfolder_reported(tmp_path: Path) -> None:
    touch(tmp_path, "d/a.jpg", "d/locked/b.jpg")
    (tmp_path / "d/locked").chmod(0)
    try:
        got = expand_inputs(tmp_path / "d")
    finally:
        (tmp_path / "d/locked").chmod(0o700)
    assert rel(got.images, tmp_path) == ["d/a.jpg"]
    assert "cannot list folder" in got.missing[0].reason


def test_unlistable_subfolder_reported_without_privileges(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    touch(tmp_path, "d/a.jpg", "d/locked/b.jpg")
    real_scandir = os.scandir

    def scandir(path):
        if os.fspath(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    got = expand_inputs(tmp_path / "d")
    assert rel(got.images, tmp_path) == ["d/a.jpg"]
    assert got.missing[0].reason == f"cannot list folder {tmp_path / 'd/locked'} (Permission denied)"
