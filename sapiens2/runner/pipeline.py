"""The batch loop: decoding, detection and writing overlap the network, which stays on the main thread.

::

    feeder thread ──► reader pool (decode + prepare: detection, crops, resizes) ──► bounded queue
    main thread: take decoded items in order, batch them, run every task's network
    writer pool (heatmap decoding, pictures, atomic files) ──► sink thread (in order: progress,
        video tracking and encoding)

Queues are bounded, so memory stays a few batches deep whatever the input. Order is kept end to end
(videos need it). A failure of one input (unreadable file, a network error on one image) is recorded and
the run goes on; a batch whose forward pass fails is retried one image at a time so only the culprit
fails. Ctrl-C (SIGINT) stops after the current batch: what was computed is written, unfinished videos
are removed (a webcam stream is finished instead), errors.json is written, and the exit code is 130.
A second Ctrl-C stops at once.
"""

from __future__ import annotations

import queue
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sapiens2.io.images import DEFAULT_MAX_PIXELS, read_image
from sapiens2.io.inputs import MissingInput
from sapiens2.io.video import VideoError, VideoReader
from sapiens2.runner.errors import Failures
from sapiens2.runner.jobs import Job
from sapiens2.runner.progress import Progress
from sapiens2.runner.resume import is_complete, sweep_temp_files
from sapiens2.runner.sources import Source
from sapiens2.runner.video import VideoSession
from sapiens2.tasks.several import attach_masks

__all__ = ["RunOptions", "RunSummary", "run_jobs"]

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130


@dataclass
class RunOptions:
    out_dir: Path
    batch_size: int = 4
    readers: int = 2  # decode/prepare threads
    writers: int = 2  # post-processing and file-writing threads
    prefetch: int = 2  # batches decoded ahead of the network
    resume: bool = False
    progress: bool | None = None  # None: on a terminal only
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    codec: str = "auto"
    smooth: bool = True
    track_threshold: float = 0.3
    track_max_age: int = 30
    track_metric: str = "iou"
    track_motion: bool = True
    handle_sigint: bool = True
    echo: Callable[[str], None] | None = None  # where messages go; default: above the progress bar


@dataclass
class RunSummary:
    images_done: int = 0
    videos_done: int = 0
    frames_done: int = 0
    skipped: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False
    seconds: float = 0.0
    errors_path: Path | None = None
    video_notes: set[str] = field(default_factory=set)

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_FAILED if self.failures else EXIT_OK


@dataclass
class _Item:
    source: Source
    image: np.ndarray
    prepared: dict[str, Any]
    frame: int | None = None
    time: float = 0.0


@dataclass
class _VideoBegin:
    source: Source
    fps: float
    frames: int


@dataclass
class _VideoEnd:
    source: Source
    frames: int
    complete: bool  # False: stopped before the end (Ctrl-C)
    problem: str | None = None  # a short or damaged file (`VideoReport.problem`)


@dataclass
class _Failed:
    source: Source
    error: BaseException
    stage: str
    frame: int | None = None


_END = object()


def _done(value: Any) -> Future:
    f: Future = Future()
    f.set_result(value)
    return f


class _Run:
    def __init__(self, jobs: Sequence[Job], sources: Sequence[Source], options: RunOptions,
                 failures: Failures, progress: Progress) -> None:
        self.jobs, self.sources, self.opt = list(jobs), list(sources), options
        self.failures, self.progress = failures, progress
        self.stop = threading.Event()
        depth = max(2, options.prefetch * options.batch_size)
        self.decoded: queue.Queue = queue.Queue(maxsize=depth)
        self.finished: queue.Queue = queue.Queue(maxsize=max(4, 2 * options.batch_size))
        self.readers = ThreadPoolExecutor(max(1, options.readers), thread_name_prefix="sapiens2-read")
        self.writers = ThreadPoolExecutor(max(1, options.writers), thread_name_prefix="sapiens2-write")
        self.summary = RunSummary()
        self.sessions: dict[Source, VideoSession] = {}

    # ------------------------------------------------------------------ feeder (its own thread)
    def _put(self, q: queue.Queue, value: Any) -> bool:
        while not self.stop.is_set():
            try:
                q.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def feed(self) -> None:
        try:
            for source in self.sources:
                if self.stop.is_set():
                    break
                if source.kind == "image":
                    if not self._put(self.decoded, self.readers.submit(self._load_image, source)):
                        break
                else:
                    self._feed_video(source)
        except BaseException as e:  # noqa: BLE001 - reported; never leave the main thread waiting
            self._put(self.decoded, _done(_Failed(Source("image", Path("?")), e, "input")))
        finally:
            while True:
                try:
                    self.decoded.put(_END, timeout=0.1)
                    break
                except queue.Full:
                    if self.stop.is_set():
                        self._drain(self.decoded)

    def _feed_video(self, source: Source) -> None:
        try:
            reader = VideoReader(source.webcam if source.kind == "webcam" else source.path)
        except VideoError as e:
            self._put(self.decoded, _done(_Failed(source, e, "decode")))
            return
        with reader:
            self.progress.add_total(reader.frame_count)
            if not self._put(self.decoded, _done(_VideoBegin(source, reader.fps, reader.frame_count))):
                return
            for i, frame in reader.frames():
                if not self._put(self.decoded, self.readers.submit(self._prepare, source, frame, i, i / reader.fps)):
                    break
            ended = not self.stop.is_set() or source.kind == "webcam"
            problem = reader.report().problem() if ended and source.kind != "webcam" else None
            self._put(self.decoded, _done(_VideoEnd(source, reader.frames_read, ended, problem)))

    # ------------------------------------------------------------------ reader threads
    def _load_image(self, source: Source) -> _Item | _Failed:
        try:
            image = read_image(source.path, max_pixels=self.opt.max_pixels)
        except Exception as e:  # noqa: BLE001 - any failure of one input is reported, the run goes on
            return _Failed(source, e, "decode")
        return self._prepare(source, image)

    def _prepare(self, source: Source, image: np.ndarray, frame: int | None = None, t: float = 0.0) -> _Item | _Failed:
        try:
            prepared = {job.task: job.prepare(image, source) for job in self.jobs}
        except Exception as e:  # noqa: BLE001 - reported per input
            return _Failed(source, e, "prepare", frame)
        return _Item(source, image, prepared, frame, t)

    # ------------------------------------------------------------------ main thread
    def run(self) -> None:
        feeder = threading.Thread(target=self.feed, name="sapiens2-feed", daemon=True)
        sink = threading.Thread(target=self.sink, name="sapiens2-sink", daemon=True)
        feeder.start()
        sink.start()
        batch: list[_Item] = []
        try:
            while not self.stop.is_set():
                future = self.decoded.get()
                if future is _END:
                    break
                entry = future.result()
                if isinstance(entry, _Item):
                    batch.append(entry)
                    if len(batch) >= self.opt.batch_size:
                        self._infer(batch)
                        batch = []
                    continue
                # markers and failures keep their place in the order: flush what came before them
                if batch:
                    self._infer(batch)
                    batch = []
                self.finished.put(("marker", entry))
            if batch and not self.stop.is_set():
                self._infer(batch)
        except KeyboardInterrupt:
            self.summary.interrupted = True
        finally:
            if self.stop.is_set():
                self.summary.interrupted = True
            self.stop.set()
            self._drain(self.decoded)
            feeder.join(timeout=30)
            self._drain(self.decoded)
            self.readers.shutdown(wait=True, cancel_futures=True)
            self.writers.shutdown(wait=True)
            self.finished.put(None)
            sink.join()

    @staticmethod
    def _drain(q: queue.Queue) -> None:
        while True:
            try:
                item = q.get_nowait()
            except queue.Empty:
                return
            if isinstance(item, Future):
                item.cancel()

    def _infer(self, batch: list[_Item]) -> None:
        try:
            raws = {job.task: job.run([it.prepared[job.task] for it in batch]) for job in self.jobs}
        except Exception as e:  # noqa: BLE001 - isolated below and reported per input
            if len(batch) > 1:  # find the culprit: one at a time
                for it in batch:
                    self._infer([it])
                return
            self.finished.put(("marker", _Failed(batch[0].source, e, "inference", batch[0].frame)))
            return
        for i, item in enumerate(batch):
            raw = {task: r[i] for task, r in raws.items()}
            self.finished.put(("item", item, self.writers.submit(self._finish, item, raw)))

    # ------------------------------------------------------------------ writer threads
    def _finish(self, item: _Item, raw: dict[str, Any]) -> dict[str, Any] | None:
        results = attach_masks({job.task: job.finish(raw[job.task], item.prepared[job.task]) for job in self.jobs})
        if item.frame is None:
            for job in self.jobs:
                job.save(results[job.task], item.image, self.opt.out_dir / item.source.rel)
            return None
        prefix = self.opt.out_dir / item.source.rel / f"{item.frame:06d}"
        for job in self.jobs:
            kinds = frozenset(job.saves - {"vis", "json"})
            if kinds:
                job.save(results[job.task], item.image, prefix, kinds)
        return results

    # ------------------------------------------------------------------ sink thread
    def sink(self) -> None:
        while True:
            entry = self.finished.get()
            if entry is None:
                break
            try:
                self._sink_one(entry)
            except Exception as e:  # noqa: BLE001 - a failing video writer, say: report, keep going
                source = entry[1].source
                self.failures.add(source.name, e, "write")
                session = self.sessions.pop(source, None)
                if session is not None:
                    session.abort()
        for source, session in self.sessions.items():
            if source.kind == "webcam":
                session.close()
            else:
                session.abort()
                self.failures.add(source.name, "interrupted before the end of the video; run again (--resume) "
                                  "to redo it", "interrupted")

    def _sink_one(self, entry: tuple) -> None:
        if entry[0] == "marker":
            marker = entry[1]
            if isinstance(marker, _Failed):
                self.failures.add(marker.source.name, marker.error, marker.stage, marker.frame)
                self.progress.update(1)
            elif isinstance(marker, _VideoBegin):
                o = self.opt
                session = VideoSession(marker.source, self.jobs, o.out_dir, marker.fps, codec=o.codec,
                                       smooth=o.smooth, track_threshold=o.track_threshold,
                                       track_max_age=o.track_max_age, track_metric=o.track_metric,
                                       track_motion=o.track_motion)
                self.sessions[marker.source] = session
                if session.note:
                    self.summary.video_notes.add(session.note)
            elif isinstance(marker, _VideoEnd):
                session = self.sessions.pop(marker.source)
                if not marker.complete:
                    session.abort()
                    self.failures.add(marker.source.name, "interrupted before the end of the video", "interrupted")
                elif marker.frames == 0:
                    session.abort()
                    self.failures.add(marker.source.name, "no frame could be decoded", "decode")
                else:  # a short or damaged file keeps what was decoded, marked incomplete, and is reported
                    session.close(marker.problem)
                    if marker.problem:
                        self.failures.add(marker.source.name, f"{marker.problem}; the outputs of the frames read are "
                                          "kept and marked incomplete", "decode")
                    else:
                        self.summary.videos_done += 1
            return
        _, item, future = entry
        try:
            results = future.result()
        except Exception as e:  # noqa: BLE001 - post-processing or writing failed for this input
            self.failures.add(item.source.name, e, "write", item.frame)
            results, ok = None, False
        else:
            ok = True
        if item.frame is None:
            self.summary.images_done += ok
        else:
            self.sessions[item.source].add(item.frame, item.time, item.image, results)
            self.summary.frames_done += ok
        self.progress.update(1)


def expected_outputs(jobs: Sequence[Job], source: Source, out_dir: Path) -> list[Path]:
    if source.kind == "image":
        return [p for job in jobs for p in job.outputs(source, out_dir)]
    return [p for job in jobs for p in job.video_outputs(source, out_dir)]


def run_jobs(jobs: Sequence[Job], sources: Sequence[Source], options: RunOptions,
             missing: Sequence[MissingInput] = ()) -> RunSummary:
    """Run every job on every source; returns what happened. errors.json is written in every case."""
    start = time.perf_counter()
    out_dir = Path(options.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    todo, skipped = list(sources), 0
    if options.resume:
        sweep_temp_files(out_dir)
        todo = [s for s in sources if s.kind == "webcam" or not is_complete(expected_outputs(jobs, s, out_dir))]
        skipped = len(sources) - len(todo)
    progress = Progress(sum(s.kind == "image" for s in todo), options.progress)
    failures = Failures(options.echo or progress.write)
    for m in missing:
        failures.add_missing(m)
    run = _Run(jobs, todo, options, failures, progress)
    previous = _install_sigint(run.stop, progress.write) if options.handle_sigint else None
    try:
        run.run()
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        progress.close()
    summary = run.summary
    summary.skipped = skipped
    summary.failures = failures.entries
    summary.errors_path = failures.write(out_dir)
    summary.seconds = time.perf_counter() - start
    return summary


def _install_sigint(stop: threading.Event, echo: Callable[[str], None]) -> Any:
    """First Ctrl-C: finish the current batch, then stop. Second: the default (KeyboardInterrupt now)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        stop.set()
        echo("interrupted: finishing the current batch and writing what is done (Ctrl-C again to stop now)")
        signal.signal(signal.SIGINT, signal.default_int_handler)

    signal.signal(signal.SIGINT, handler)
    return previous
