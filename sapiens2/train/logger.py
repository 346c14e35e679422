"""Run logging on the main process: a console line per interval (over a progress bar), CSV files, and
TensorBoard when it is installed. Task-free: it logs whatever scalars it is given.

`<work_dir>/train_log.csv` gets a row per logging interval and `<work_dir>/val_log.csv` a row per
validation; the columns are fixed by the first row written (later new keys are dropped with a warning,
missing ones left empty). On resume, rows past the resumed step are removed first, so the files read as
one uninterrupted run.
"""

from __future__ import annotations

import csv
import datetime
import logging
import sys
import time
from pathlib import Path

log = logging.getLogger("sapiens2.train")


class RunLogger:
    def __init__(self, work_dir: str | Path, total_steps: int, start_step: int = 0, enabled: bool = True,
                 progress: bool = True, tensorboard: bool = True) -> None:
        self.dir = Path(work_dir)
        self.enabled = enabled
        self.total = total_steps
        self.start_time = time.monotonic()
        self.start_step = start_step
        self.bar = None
        self.tb = None
        self._columns: dict[str, list[str]] = {}
        if not enabled:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        for name in ("train_log.csv", "val_log.csv"):
            _truncate_after(self.dir / name, start_step)
        if progress:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total_steps, initial=start_step, dynamic_ncols=True, unit="it",
                                file=sys.stderr, mininterval=1.0, disable=None)
            except ImportError:  # pragma: no cover - tqdm comes with huggingface_hub
                self.bar = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(self.dir / "tensorboard"), purge_step=start_step or None)
            except Exception:  # noqa: BLE001 - not installed (or broken): TensorBoard is optional
                self.tb = None

    def advance(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def eta(self, step: int) -> str:
        done = step - self.start_step
        if done <= 0:
            return "?"
        left = (time.monotonic() - self.start_time) / done * (self.total - step)
        return str(datetime.timedelta(seconds=int(left)))

    def write(self, line: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None and not self.bar.disable:
            self.bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)
        log.debug(line)

    def scalars(self, kind: str, step: int, values: dict[str, float]) -> None:
        """Append a row to `<kind>_log.csv` and the TensorBoard scalars `<kind>/<key>`."""
        if not self.enabled:
            return
        path = self.dir / f"{kind}_log.csv"
        cols = self._columns.get(kind)
        if cols is None:
            cols = _existing_columns(path) or ["step", *values]
            self._columns[kind] = cols
            if not path.exists() or path.stat().st_size == 0:
                with open(path, "w", newline="") as f:
                    csv.writer(f).writerow(cols)
        extra = [k for k in values if k not in cols]
        if extra:
            log.warning("%s: new columns %s are not written to the CSV", path.name, extra)
        with open(path, "a", newline="") as f:
            csv.writer(f).writerow([step if c == "step" else _fmt(values.get(c)) for c in cols])
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(f"{kind}/{k}", v, step)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.tb is not None:
            self.tb.close()


def _fmt(v: float | None) -> str:
    return "" if v is None else f"{v:.8g}"


def _existing_columns(path: Path) -> list[str] | None:
    if not path.is_file():
        return None
    with open(path, newline="") as f:
        header = next(csv.reader(f), None)
    return header or None


def _truncate_after(path: Path, step: int) -> None:
    """Drop rows logged after `step` (a run resumed from `step` rewrites them)."""
    if not path.is_file():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    keep = [rows[0]] + [r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) <= step]
    if len(keep) != len(rows):
        with open(path, "w", newline="") as f:
            csv.writer(f).writerows(keep)


def read_csv_log(path: str | Path) -> list[dict[str, float]]:
    """A CSV log back as a list of {column: value} (empty cells left out)."""
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]
