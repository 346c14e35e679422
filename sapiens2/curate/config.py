"""The curation settings: one dataclass per stage, read from a TOML file with one table per stage.

Defaults are the paper's where it states one (short side >= 384 px); the others are documented choices
meant to be tuned by looking at the report's contact sheets.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class DecodeConfig:
    """Decode + size filter. `min_short_side` 384 is Humans-1B's rule; `max_pixels` guards against bombs."""

    min_short_side: int = 384
    max_pixels: int = 2**27


@dataclass(frozen=True)
class PersonConfig:
    """Keep images with one person box scoring >= `min_score` and covering >= `min_area_fraction` of it.

    0.5 / 0.05 (a person filling 5% of the frame, e.g. ~ 86 x 172 px of a 640 x 480 photo) are our defaults;
    the paper says only "prominent person"."""

    enabled: bool = True
    min_score: float = 0.5
    min_area_fraction: float = 0.05


#: Zero-shot prompt sets (CLIP's "a photo of ..." style). Realism: a person photographed, against what the
#: paper filters out (renders, drawings, screenshots). Text: rendered overlays (captions, watermarks, memes).
PHOTO_PROMPTS = ("a photo of a person", "a photo of people", "a candid photograph of a person",
                 "a professional photograph of a person")
NOT_PHOTO_PROMPTS = ("a cartoon", "a drawing", "a painting", "an anime illustration", "a 3D render",
                     "a video game character", "a screenshot", "a clip art illustration")
TEXT_PROMPTS = ("a photo with text overlay", "a photo with a caption", "a photo with a watermark",
                "a meme with text")
NO_TEXT_PROMPTS = ("a photo without text", "a clean photo with no writing")
TEXT_DETECTORS = ("clip", "strokes")
EMBED_SOURCES = ("sapiens2", "clip")


@dataclass(frozen=True)
class ClipConfig:
    """CLIP image embeddings -> LAION aesthetic score, zero-shot realism and text-overlay filters.

    `model`: a hub id or a local folder of a transformers CLIP checkpoint (safetensors). The aesthetic head
    is the LAION "improved aesthetic predictor" (an MLP trained on CLIP ViT-L/14 image embeddings, hence the
    default model), the file `aesthetic_file` of the hub repo `aesthetic_repo` (`aesthetic_repo = ""`: a
    local file). Its scale is AVA's 1-10; the LAION-Aesthetics V2 subsets were cut at 4.5, 5, 6 (and 6.25,
    6.5). `min_aesthetic = 4.5`, their most permissive cut: the predictor prefers art and staged photos, so
    a high cut would bias which people and scenes stay; 4.5 removes mostly blurred, dark and junk images.

    Zero-shot: a softmax (CLIP's logit scale) over each prompt set; `photo_score` is the summed probability
    of `photo_prompts`, `text_score` that of `text_prompts`. An image is dropped when its non-photo prompts
    sum to more than 1 - `min_photo_score`, or its text prompts to more than `max_text_score` (0.5: the
    likelier side wins). `text_detector = "strokes"` scores text overlays with a classical detector instead
    (no weights; see `sapiens2.curate.textdetect`)."""

    enabled: bool = True
    model: str = "openai/clip-vit-large-patch14"
    device: str = "cpu"
    batch_size: int = 32
    aesthetic: bool = True
    aesthetic_repo: str = "camenduru/improved-aesthetic-predictor"
    aesthetic_file: str = "sac+logos+ava1-l14-linearMSE.pth"
    min_aesthetic: float = 4.5
    photo_prompts: tuple[str, ...] = PHOTO_PROMPTS
    not_photo_prompts: tuple[str, ...] = NOT_PHOTO_PROMPTS
    min_photo_score: float = 0.5
    text_detector: str = "clip"
    text_prompts: tuple[str, ...] = TEXT_PROMPTS
    no_text_prompts: tuple[str, ...] = NO_TEXT_PROMPTS
    max_text_score: float = 0.5


@dataclass(frozen=True)
class EmbedConfig:
    """Image embeddings for deep dedup and clustering: pooled patch tokens of a Sapiens2 pretrain backbone.

    `model` is an official name, hub id or file for `sapiens2.load`; images are squashed to `size` x `size`.
    `source = "clip"` reuses the `[clip]` stage's image embeddings instead (no second model)."""

    model: str = "sapiens2-pretrain-0.4b"
    size: int = 224
    device: str = "cpu"
    source: str = "sapiens2"


@dataclass(frozen=True)
class DedupConfig:
    """Duplicate groups: 64-bit DCT pHashes within `hamming_radius` bits, then (when `deep`) embeddings with
    cosine similarity >= `cosine_threshold`. The largest image of a group (then the best person score) stays.

    Radius 10 of 64 catches resized / re-compressed / ~3%-cropped copies while unrelated images differ in
    ~32 bits (P(<= 10) ~ 1e-8 for independent bits; real photos correlate, so more); larger crops are left to
    the deep-feature step."""

    enabled: bool = True
    hamming_radius: int = 10
    deep: bool = True
    cosine_threshold: float = 0.95


@dataclass(frozen=True)
class HeadConfig:
    """Head pose (yaw / pitch / roll) of the person stage's best box, from the face keypoints of a Sapiens2
    pose `model` fitted to a generic 3D face (see `sapiens2.curate.headpose`).

    Off by default: it runs a 0.4b pose network on a 1024 x 768 crop per image, twice with the flip test
    (2 x 3072 tokens against the embed stage's 196: some 30 times its work, more with attention's quadratic
    cost) and, with the default limits, drops nothing: turn it on for the angle columns (filters, yaw
    balancing). A face counts when >= `min_landmarks` of its 11 landmarks score >= `min_score` (0.3, the
    pose predictor's drawing threshold) and the fit's mean reprojection error is <= `max_fit_error` of the
    face's size. `require_face` drops images without one (`no_face`; default: kept, angles null);
    `max_abs_yaw` / `max_abs_pitch` (degrees) drop faces turned further (`head_pose`; 180 / 90: no limit)."""

    enabled: bool = False
    model: str = "sapiens2-pose-0.4b"
    device: str = "cpu"
    flip_test: bool = True
    min_score: float = 0.3
    min_landmarks: int = 6
    max_fit_error: float = 0.25
    require_face: bool = False
    max_abs_yaw: float = 180.0
    max_abs_pitch: float = 90.0


#: How a leaf cluster's quota is filled: uniformly at random, or its members closest to the centroid first.
SAMPLINGS = ("random", "centroid")


@dataclass(frozen=True)
class ClusterConfig:
    """Hierarchical k-means on the embeddings of the deduplicated images, then balanced sampling to `target`
    images (Vo et al. 2024, "Automatic Data Curation for Self-Supervised Learning: A Clustering-Based
    Approach"). `levels` = [k1, k2, ...]: k1 clusters of the images, then k2 clusters of those k1 centroids,
    and so on (strictly decreasing); `[k]` is plain k-means. Sampling goes top-down: the target is split as
    evenly as the clusters' sizes allow among the top-level clusters (each gives min(its size, q), q the
    largest quota fitting), each cluster's share among its children likewise, down to the leaves (level 1),
    which are filled by `sampling` ("random", or "centroid": closest first, the most typical images). With
    `balance_yaw_bins` = N > 0 a leaf takes its images round-robin over N equal head-yaw bins on [-90, 90]
    degrees (images without a yaw form one more bin; needs [head]). `target = 0` assigns clusters and keeps
    everything."""

    enabled: bool = True
    levels: tuple[int, ...] = (100,)
    target: int = 0
    sampling: str = "random"
    balance_yaw_bins: int = 0
    iterations: int = 20
    restarts: int = 3
    seed: int = 0


@dataclass(frozen=True)
class OutputConfig:
    """Kept images are re-encoded as JPEG (`jpeg_quality`) with their long side at most `max_side`, in tar
    shards of `shard_size` images."""

    shard_size: int = 1000
    max_side: int = 1024
    jpeg_quality: int = 90


@dataclass(frozen=True)
class EngineConfig:
    """The local engine: images per batch (each batch and stage is one resumable Parquet part), the long
    side decoded images are shrunk to while a batch holds them (sizes are measured before), and the threads
    decoding the next batch while the models work on this one (`decode_workers`; 0: as many as CPUs, at
    most 4. Decoding and resizing release the GIL, so threads run them in parallel)."""

    batch_size: int = 64
    work_side: int = 1280
    decode_workers: int = 0


@dataclass(frozen=True)
class CurateConfig:
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    person: PersonConfig = field(default_factory=PersonConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)

    def __post_init__(self) -> None:
        checks = [
            (self.decode.min_short_side >= 1, "decode.min_short_side must be >= 1"),
            (0.0 <= self.person.min_area_fraction <= 1.0, "person.min_area_fraction must be in [0, 1]"),
            (0 <= self.dedup.hamming_radius <= 64, "dedup.hamming_radius must be in [0, 64]"),
            (-1.0 <= self.dedup.cosine_threshold <= 1.0, "dedup.cosine_threshold must be in [-1, 1]"),
            (0.0 <= self.head.min_score, "head.min_score must be >= 0"),
            (4 <= self.head.min_landmarks <= 11, "head.min_landmarks must be in [4, 11] (a PnP fit needs 4 "
                                                 "points; the generic face has 11)"),
            (self.head.max_fit_error > 0, "head.max_fit_error must be > 0"),
            (0.0 <= self.head.max_abs_yaw <= 180.0, "head.max_abs_yaw must be in [0, 180] degrees"),
            (0.0 <= self.head.max_abs_pitch <= 90.0, "head.max_abs_pitch must be in [0, 90] degrees"),
            (len(self.cluster.levels) >= 1, "cluster.levels must name at least one level, e.g. [100]"),
            (all(k >= 1 for k in self.cluster.levels), f"cluster.levels must be >= 1, got {list(self.cluster.levels)}"),
            (all(a > b for a, b in zip(self.cluster.levels, self.cluster.levels[1:])),
             f"cluster.levels must be strictly decreasing (each level clusters the centroids of the one before), "
             f"got {list(self.cluster.levels)}"),
            (self.cluster.sampling in SAMPLINGS, f"cluster.sampling must be one of {', '.join(SAMPLINGS)}, "
                                                 f"got {self.cluster.sampling!r}"),
            (self.cluster.balance_yaw_bins >= 0, "cluster.balance_yaw_bins must be >= 0 (0: off)"),
            (not (self.cluster.enabled and self.cluster.balance_yaw_bins and not self.head.enabled),
             "cluster.balance_yaw_bins needs the head stage ([head] enabled = true)"),
            (self.cluster.restarts >= 1, "cluster.restarts must be >= 1"),
            (self.cluster.target >= 0, "cluster.target must be >= 0 (0: no sampling)"),
            (self.output.shard_size >= 1, "output.shard_size must be >= 1"),
            (self.output.max_side >= 16, "output.max_side must be >= 16"),
            (1 <= self.output.jpeg_quality <= 100, "output.jpeg_quality must be in [1, 100]"),
            (self.engine.batch_size >= 1, "engine.batch_size must be >= 1"),
            (self.engine.work_side >= 224, "engine.work_side must be >= 224"),
            (self.engine.decode_workers >= 0, "engine.decode_workers must be >= 0 (0: one per CPU, at most 4)"),
            (self.clip.batch_size >= 1, "clip.batch_size must be >= 1"),
            (0.0 <= self.clip.min_photo_score <= 1.0, "clip.min_photo_score must be in [0, 1]"),
            (0.0 <= self.clip.max_text_score <= 1.0, "clip.max_text_score must be in [0, 1]"),
            (self.clip.text_detector in TEXT_DETECTORS,
             f"clip.text_detector must be one of {', '.join(TEXT_DETECTORS)}, got {self.clip.text_detector!r}"),
            (bool(self.clip.model), "clip.model must name a hub id or a folder"),
            (not self.clip.aesthetic or bool(self.clip.aesthetic_file),
             "clip.aesthetic_file must name the aesthetic head's file (or set clip.aesthetic = false)"),
            (self.embed.source in EMBED_SOURCES,
             f"embed.source must be one of {', '.join(EMBED_SOURCES)}, got {self.embed.source!r}"),
            (self.embed.source != "clip" or self.clip.enabled or not self.needs_embeddings(),
             "embed.source = \"clip\" needs the [clip] stage (clip.enabled = true)"),
        ]
        for name in ("photo_prompts", "not_photo_prompts", "text_prompts", "no_text_prompts"):
            prompts = getattr(self.clip, name)
            checks.append((bool(prompts) and all(isinstance(p, str) and p.strip() for p in prompts),
                           f"clip.{name} must be a non-empty list of non-empty strings"))
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def needs_embeddings(self) -> bool:
        return (self.dedup.enabled and self.dedup.deep) or self.cluster.enabled

    def embeddings_from_clip(self) -> bool:
        """Whether dedup / clustering take the `[clip]` stage's embeddings (no embed stage of their own)."""
        return self.needs_embeddings() and self.embed.source == "clip"


def fingerprint(*sections: object) -> str:
    """A short stable hash of config sections: part folders are named by it, so a changed threshold
    recomputes that stage (and those after it) and nothing else."""
    blob = json.dumps([dataclasses.asdict(s) if dataclasses.is_dataclass(s) else s for s in sections],
                      sort_keys=True, default=repr)
    return hashlib.sha1(blob.encode()).hexdigest()[:10]


def load_config(path: str | os.PathLike[str] | None) -> CurateConfig:
    """The defaults, overridden by the TOML file's tables; an unknown table or key is an error naming it."""
    if path is None:
        return CurateConfig()
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ValueError(f"{path}: cannot read the config: {err.strerror or err}") from None
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"{path}: not valid TOML: {err}") from None
    sections = {f.name: f.type for f in dataclasses.fields(CurateConfig)}
    defaults = CurateConfig()
    kwargs = {}
    for name, table in data.items():
        if name not in sections:
            raise ValueError(f"{path}: unknown table [{name}]; expected one of {', '.join(sections)}")
        if not isinstance(table, dict):
            raise ValueError(f"{path}: [{name}] must be a table")
        section = getattr(defaults, name)
        known = {f.name: type(getattr(section, f.name)) for f in dataclasses.fields(section)}
        for key, value in table.items():
            if key not in known:
                raise ValueError(f"{path}: unknown key {name}.{key}; expected one of {', '.join(known)}")
            want = known[key]
            if want is tuple:  # TOML arrays: the cluster levels (integers), the CLIP prompt lists (strings)
                item = type(getattr(section, key)[0])
                if not isinstance(value, list) or not all(isinstance(v, item) and not isinstance(v, bool)
                                                          for v in value):
                    noun = "integers" if item is int else "strings"
                    raise ValueError(f"{path}: {name}.{key} must be a list of {noun}, got {value!r}")
                table[key] = value = tuple(value)
            if want is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
                table[key] = value
            if not isinstance(value, want) or (want is int and isinstance(value, bool)):
                raise ValueError(f"{path}: {name}.{key} must be a {want.__name__}, got {value!r}")
        kwargs[name] = dataclasses.replace(section, **table)
    try:
        return CurateConfig(**kwargs)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
