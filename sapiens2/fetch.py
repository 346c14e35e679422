"""Where official checkpoint files live, and getting them from the model hub quickly or not at all.

A file is looked for in the reference folder layout (`$SAPIENS_CHECKPOINT_ROOT`, `$SAPIENS_V1_CHECKPOINT_ROOT`),
then in the Hugging Face cache, then downloaded. Reaching the hub is decided once per process: one short
check of the endpoint (or the first download that fails to connect) marks it unreachable for the rest of
the run, so a machine without network gets its answer at once for every missing file, not after minutes
of retries. The hub library's own retry messages are silenced for these calls; each missing file gives
one `CheckpointNotFoundError` whose message says what is missing and how to get it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from sapiens2.zoo import ModelInfo

DEFAULT_CHECKPOINT_ROOT = "~/sapiens2_host"
DEFAULT_V1_CHECKPOINT_ROOT = "~/sapiens_host"
PROBE_TIMEOUT_S = 5.0
_TRUE = ("1", "true", "yes", "on")

# Endpoint -> None when it answered, else why it cannot be used. One entry per process and endpoint.
_reachability: dict[str, str | None] = {}


class CheckpointNotFoundError(FileNotFoundError):
    """No file for the requested model; the message says where it looked and how to get it.

    For an official model, `info`, `expected_at` (the reference-layout path) and `reason` (why the hub did
    not provide it) are set, and `line` is the one-line summary used when several files are missing.
    """

    def __init__(self, message: str, info: ModelInfo | None = None, expected_at: Path | None = None,
                 reason: str = "") -> None:
        super().__init__(message)
        self.info, self.expected_at, self.reason = info, expected_at, reason

    @property
    def line(self) -> str:
        if self.info is None:
            return str(self)
        return f"{self.info.filename} ({self.info.name}): not at {self.expected_at}; {self.reason}"


def checkpoint_root(generation: int = 2) -> Path:
    """The reference layout's root: `$SAPIENS_CHECKPOINT_ROOT` (default `~/sapiens2_host`) for Sapiens2,
    `$SAPIENS_V1_CHECKPOINT_ROOT` (default `~/sapiens_host`) for v1."""
    if generation == 1:
        return Path(os.environ.get("SAPIENS_V1_CHECKPOINT_ROOT") or DEFAULT_V1_CHECKPOINT_ROOT).expanduser()
    return Path(os.environ.get("SAPIENS_CHECKPOINT_ROOT") or DEFAULT_CHECKPOINT_ROOT).expanduser()


def local_path(info: ModelInfo) -> Path:
    """Where the reference layout keeps `info`'s file."""
    return checkpoint_root(info.generation) / info.local_relpath


def cached_path(info: ModelInfo) -> Path | None:
    """The file in the Hugging Face cache, if it is there (never touches the network)."""
    if not info.on_hub:  # a local-only model (albedo): there is no repo to look in
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(info.repo, info.filename)
    return Path(found) if isinstance(found, str) else None


def hub_offline() -> bool:
    """Whether offline mode is on (`HF_HUB_OFFLINE`, read now or when the hub library was imported)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE:
        return True
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - a declared dependency
        return False
    return bool(constants.HF_HUB_OFFLINE)


def hub_endpoint() -> str:
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - a declared dependency
        return "https://huggingface.co"
    return constants.ENDPOINT


def hub_unreachable() -> str | None:
    """Why the hub cannot be used in this process, or None when it can. Checked once per endpoint."""
    if hub_offline():
        return "offline mode is on (HF_HUB_OFFLINE=1)"
    endpoint = hub_endpoint()
    if endpoint not in _reachability:
        _reachability[endpoint] = _probe(endpoint)
    return _reachability[endpoint]


def forget_reachability() -> None:
    """Check the hub again on next use (after the network came back, and in tests)."""
    _reachability.clear()


def _probe(endpoint: str) -> str | None:
    """One short request to the endpoint with the hub library's own session (its proxies and headers)."""
    try:
        from huggingface_hub.utils import get_session
    except ImportError:  # pragma: no cover - a declared dependency
        return "huggingface_hub is not installed"
    try:
        with quiet_hub():
            get_session().head(endpoint, timeout=PROBE_TIMEOUT_S)
    except Exception as e:  # noqa: BLE001 - any failure to get an answer means: not reachable now
        return _unreachable_reason(endpoint, e)
    return None


def _unreachable_reason(endpoint: str, error: BaseException) -> str:
    if "timeout" in type(error).__name__.lower():
        return f"the model hub at {endpoint} did not answer within {PROBE_TIMEOUT_S:g} s"
    return f"the model hub at {endpoint} cannot be reached ({type(error).__name__})"


@contextmanager
def quiet_hub() -> Iterator[None]:
    """The hub library logs every retry ('Retrying in 8s [Retry 5/5]'); our own message says what matters."""
    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def download(info: ModelInfo) -> Path:
    """Fetch `info`'s file into the Hugging Face cache (or find it there) and return its path.

    Raises `CheckpointNotFoundError` at once when the hub is known to be unreachable in this run, or when the
    model was never published there.
    """
    if not info.on_hub:
        here = local_path(info)
        raise CheckpointNotFoundError(info.not_published_message(here), info, here, "not published on the hub")
    reason = hub_unreachable()
    if reason is not None:
        found = cached_path(info)
        if found is not None and found.is_file():
            return found
        raise not_found(info, reason)
    from huggingface_hub import hf_hub_download

    try:
        with quiet_hub():
            return Path(hf_hub_download(info.repo, info.filename))
    except Exception as e:  # noqa: BLE001 - offline, no network, no such repo, gated...: one clear error
        reason, unreachable = hub_failure(e)
        if unreachable:
            _reachability[hub_endpoint()] = reason
        raise not_found(info, reason) from None


def hub_failure(error: BaseException) -> tuple[str, bool]:
    """Our one-line reason for a failed download, and whether it means the hub is unreachable.

    Matched by class name so that it holds across huggingface_hub versions (whose exception classes moved).
    """
    names = {c.__name__ for c in type(error).__mro__}
    if "GatedRepoError" in names:
        return ("the hub repo is gated: accept its terms on its hub page, then log in with `hf auth login`",
                False)
    if "RepositoryNotFoundError" in names:
        return "the hub has no such repo (or it is private)", False
    if "RevisionNotFoundError" in names:
        return "the hub repo has no such revision", False
    if "LocalEntryNotFoundError" in names or names & {"ConnectionError", "ConnectError", "ConnectTimeout",
                                                        "TimeoutException", "Timeout", "NetworkError"}:
        return _unreachable_reason(hub_endpoint(), error), True
    if names & {"EntryNotFoundError", "RemoteEntryNotFoundError"}:
        return "the hub repo has no such file", False
    return f"the download failed ({type(error).__name__})", False


def not_found(info: ModelInfo, reason: str) -> CheckpointNotFoundError:
    """The error for an official file that is neither local nor obtainable: what, where, why, and the fix."""
    here = local_path(info)
    guess = "" if info.hub_confirmed else " (the release lists no hub repo for this model; its name is a guess)"
    message = (
        f"{info.filename} ({info.name}, hub repo {info.repo}) is not on this machine: not at {here}, nor in "
        f"the Hugging Face cache; {reason}.\n"
        f"  Get it when online with `sapiens2 download {info.name}` "
        f"(or `hf download {info.repo} {info.filename}`{guess}),\n"
        f"  or put the file at {here} (${_root_variable(info)} sets the root)."
        + ("" if hub_offline() else "\n  Set HF_HUB_OFFLINE=1 to skip the hub.")
    )
    return CheckpointNotFoundError(message, info, here, reason)


def missing_report(errors: Sequence[CheckpointNotFoundError]) -> str:
    """One line per missing file, then one fix for all of them (for a command that needs several files)."""
    lines = [f"missing: {e.line}" for e in errors]
    infos = [e.info for e in errors if e.info is not None]
    if infos:
        names = " ".join(dict.fromkeys(i.name for i in infos))
        hf = "; ".join(f"`hf download {i.repo} {i.filename}`" for i in infos)
        roots = ", ".join(sorted({f"${_root_variable(i)}" for i in infos}))
        lines.append(f"Get {'it' if len(infos) == 1 else 'them'} when online with `sapiens2 download {names}` "
                     f"(or {hf}), or put the files at the paths above ({roots} sets the root)."
                     + ("" if hub_offline() else " Set HF_HUB_OFFLINE=1 to skip the hub."))
    return "\n".join(lines)


def _root_variable(info: ModelInfo) -> str:
    return "SAPIENS_V1_CHECKPOINT_ROOT" if info.generation == 1 else "SAPIENS_CHECKPOINT_ROOT"
