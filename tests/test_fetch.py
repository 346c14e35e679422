"""Getting official files: without network the answer comes at once, once per run, with the fix."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sapiens2 import fetch
from sapiens2.fetch import CheckpointNotFoundError, download, missing_report
from sapiens2.zoo import find_model

NAMES = ["sapiens2-pose-0.4b", "sapiens2-seg-1b", "sapiens2-normal-0.4b", "rtmdet-m-person"]


@pytest.fixture(autouse=True)
def fresh_reachability():
    fetch.forget_reachability()
    yield
    fetch.forget_reachability()


@pytest.fixture
def online_homes(tmp_path, monkeypatch):
    """Empty checkpoint root and hub cache, offline mode off (the library's import-time copy too)."""
    from huggingface_hub import constants

    monkeypatch.setenv("SAPIENS_CHECKPOINT_ROOT", str(tmp_path / "root"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    return tmp_path


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _has_every_part(message: str, name: str) -> None:
    info = find_model(name)
    assert info.filename in message and f"sapiens2 download {name}" in message
    assert f"hf download {info.repo} {info.filename}" in message and "huggingface-cli" not in message
    assert "SAPIENS_CHECKPOINT_ROOT" in message and "HF_HUB_OFFLINE=1" in message


def test_no_network_answers_every_missing_file_at_once(tmp_path):
    """The real hub library, pointed at a closed port: no retry walls, one short message per file."""
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{_closed_port()}", HF_HUB_CACHE=str(tmp_path / "hf"),
               SAPIENS_CHECKPOINT_ROOT=str(tmp_path / "root"))
    script = (
        "import json, sys, time\n"
        "from sapiens2.hub import resolve\n"
        "start, messages = time.perf_counter(), []\n"
        f"for name in {NAMES!r}:\n"
        "    try:\n"
        "        resolve(name)\n"
        "    except FileNotFoundError as e:\n"
        "        messages.append(str(e))\n"
        "print(json.dumps({'seconds': time.perf_counter() - start, 'messages': messages}))\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120,
                         cwd=Path(__file__).resolve().parents[1])
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["seconds"] < 3.0
    assert len(result["messages"]) == len(NAMES)
    for name, message in zip(NAMES, result["messages"]):
        _has_every_part(message, name)
        assert "cannot be reached" in message and "Traceback" not in message
    assert "Retry" not in run.stderr and "thrown while requesting" not in run.stderr


def test_the_first_failed_connection_decides_for_the_whole_run(online_homes, monkeypatch):
    import huggingface_hub

    calls = []

    class LocalEntryNotFoundError(Exception):
        pass

    def unreachable(repo, filename, **kwargs):
        calls.append(filename)
        raise LocalEntryNotFoundError("a long foreign message\nwith a second line")

    monkeypatch.setattr(fetch, "_probe", lambda endpoint: None)  # the quick check passed...
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", unreachable)  # ...then the network went away
    errors = []
    for name in NAMES:
        with pytest.raises(CheckpointNotFoundError) as e:
            download(find_model(name))
        errors.append(e.value)
    assert len(calls) == 1
    assert all("cannot be reached" in e.reason and "foreign" not in str(e) for e in errors)


def test_the_check_is_made_once_per_run(online_homes, monkeypatch):
    probes = []
    monkeypatch.setattr(fetch, "_probe", lambda endpoint: probes.append(endpoint) or "unreachable (test)")
    for name in NAMES:
        with pytest.raises(CheckpointNotFoundError, match=r"unreachable \(test\)"):
            download(find_model(name))
    assert len(probes) == 1


@pytest.mark.parametrize("error, reason", [
    ("GatedRepoError", "gated: accept its terms on its hub page, then log in with `hf auth login`"),
    ("RepositoryNotFoundError", "no such repo"),
    ("EntryNotFoundError", "no such file"),
    ("RemoteEntryNotFoundError", "no such file"),
    ("HfHubHTTPError", r"the download failed \(HfHubHTTPError\)"),
])
def test_each_hub_answer_has_its_own_short_reason(online_homes, monkeypatch, error, reason):
    import huggingface_hub

    kind = type(error, (Exception,), {})

    def fails(repo, filename, **kwargs):
        raise kind("401 Client Error. (Request ID: Root=1-abc)\n\nlots of foreign text")

    monkeypatch.setattr(fetch, "_probe", lambda endpoint: None)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fails)
    with pytest.raises(CheckpointNotFoundError, match=reason) as e:
        download(find_model("sapiens2-pose-0.4b"))
    assert "Request ID" not in str(e.value) and e.value.__cause__ is None
    _has_every_part(str(e.value), "sapiens2-pose-0.4b")
    assert fetch.hub_unreachable() is None  # a missing file does not make the hub unreachable


def test_offline_mode_makes_no_request(online_homes, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(fetch, "_probe", lambda endpoint: pytest.fail("probed while offline"))
    with pytest.raises(CheckpointNotFoundError, match=r"offline mode is on \(HF_HUB_OFFLINE=1\)"):
        download(find_model("sapiens2-pose-0.4b"))


def test_an_unreachable_hub_still_serves_the_cache(online_homes, monkeypatch):
    info = find_model("sapiens2-pose-0.4b")
    cached = online_homes / "cached.safetensors"
    cached.write_bytes(b"x")
    monkeypatch.setattr(fetch, "_probe", lambda endpoint: "unreachable (test)")
    monkeypatch.setattr(fetch, "cached_path", lambda i: cached if i is info else None)
    assert download(info) == cached


def test_the_report_for_several_files_gives_one_line_each_and_one_fix(online_homes, monkeypatch):
    monkeypatch.setattr(fetch, "_probe", lambda endpoint: "the model hub cannot be reached (test)")
    errors = []
    for name in NAMES[:2] + ["sapiens-depth-0.3b"]:
        with pytest.raises(CheckpointNotFoundError) as e:
            download(find_model(name))
        errors.append(e.value)
    lines = missing_report(errors).splitlines()
    assert len(lines) == 4 and all(line.startswith("missing: ") for line in lines[:3])
    assert "sapiens2_0.4b_pose.safetensors (sapiens2-pose-0.4b): not at " in lines[0]
    fix = lines[3]
    assert "`sapiens2 download sapiens2-pose-0.4b sapiens2-seg-1b sapiens-depth-0.3b`" in fix
    assert "hf download facebook/sapiens2-seg-1b sapiens2_1b_seg.safetensors" in fix
    assert "$SAPIENS_CHECKPOINT_ROOT" in fix and "$SAPIENS_V1_CHECKPOINT_ROOT" in fix and "HF_HUB_OFFLINE=1" in fix


def test_the_report_suggests_offline_mode_only_when_it_is_off(online_homes, monkeypatch):
    monkeypatch.setattr(fetch, "_probe", lambda endpoint: "the model hub cannot be reached (test)")
    with pytest.raises(CheckpointNotFoundError) as e:
        download(find_model(NAMES[0]))
    assert missing_report([e.value]).endswith("Set HF_HUB_OFFLINE=1 to skip the hub.")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert "HF_HUB_OFFLINE" not in missing_report([e.value]) and missing_report([e.value]).endswith("sets the root).")
