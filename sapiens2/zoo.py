"""The table of official Sapiens2 models: name -> arch, task, hub repo, file name, input size.

Names follow the hub repos (`sapiens2-<task>-<size>`); file names follow the release
(`sapiens2_<size>_<task>.safetensors`). This is the one place that lists them.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

HUB_OWNER = "facebook"
DENSE_INPUT = (1024, 768)  # H, W of every task model
SIZES = ("0.4b", "0.8b", "1b", "5b")
TASK_NAMES = ("pose", "seg", "normal", "pointmap", "albedo")


@dataclass(frozen=True)
class ModelInfo:
    """One official checkpoint."""

    name: str  # e.g. "sapiens2-pose-0.4b"
    arch: str  # key of sapiens2.models.ARCHS
    task: str  # "pretrain" or one of TASK_NAMES
    repo: str  # hub repo id
    filename: str  # file inside the repo, and in the reference folder layout
    input_size: tuple[int, int] = DENSE_INPUT  # (H, W) the model was trained at
    hub_confirmed: bool = True  # False: the release names the file but lists no hub repo for it

    @property
    def folder(self) -> str:
        """Sub-folder of the reference checkpoint root (`~/sapiens2_host/<folder>/<filename>`)."""
        return self.task

    @property
    def hub_id(self) -> str:
        return self.repo


def _file(arch: str, task: str) -> str:
    return f"sapiens2_{arch.replace('-', '_')}_{task}.safetensors"


def _entries() -> list[ModelInfo]:
    models = []
    for arch in ("0.1b", "0.4b", "0.8b", "1b", "1b-4k", "5b"):
        size = (4096, 3072) if arch == "1b-4k" else DENSE_INPUT
        name = f"sapiens2-pretrain-{arch}"
        models.append(ModelInfo(name, arch, "pretrain", f"{HUB_OWNER}/{name}", _file(arch, "pretrain"), size))
    for task in TASK_NAMES:
        for arch in SIZES:
            name = f"sapiens2-{task}-{arch}"
            # The model zoo lists no albedo repos, though the albedo demo expects these files: the repo name
            # is our best guess by analogy with the others.
            models.append(
                ModelInfo(name, arch, task, f"{HUB_OWNER}/{name}", _file(arch, task), hub_confirmed=task != "albedo")
            )
    return models


MODELS: dict[str, ModelInfo] = {m.name: m for m in _entries()}


def find_model(query: str) -> ModelInfo | None:
    """The official model a name, hub id or file name refers to (case-insensitive), or None."""
    q = query.strip().lower()
    q = q.removeprefix("https://huggingface.co/").removeprefix(f"{HUB_OWNER}/")
    for m in MODELS.values():
        if q in (m.name, m.filename.lower(), m.filename.lower().removesuffix(".safetensors")):
            return m
    return None


def suggest(query: str, n: int = 3) -> list[str]:
    """Official names closest to a mistyped one."""
    return difflib.get_close_matches(query.lower().removeprefix(f"{HUB_OWNER}/"), list(MODELS), n=n, cutoff=0.5)
