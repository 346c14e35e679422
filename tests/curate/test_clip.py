"""The CLIP stage: the transformers CLIP loader on a tiny random checkpoint, the LAION aesthetic head's exact
layout, the zero-shot decisions on planted cartoons / text overlays / dull images, config, engine and CLI."""

import dataclasses
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

pytest.importorskip("transformers")

from sapiens2.checkpoint import CheckpointError  # noqa: E402
from sapiens2.cli import main  # noqa: E402
from sapiens2.curate.clip import (  # noqa: E402
    CLIP_MEAN, AestheticScorer, ClipEmbedder, ClipPreprocess, build_aesthetic_head, expected_aesthetic_shapes,
    zero_shot,
)
from sapiens2.curate.clip_stage import ClipModels, ClipStage, clip_loader, load_clip_models  # noqa: E402
from sapiens2.curate.config import (  # noqa: E402
    ClipConfig, ClusterConfig, CurateConfig, DedupConfig, EmbedConfig, load_config,
)
from sapiens2.curate.engine import MANIFEST_SCHEMA, build_stages, curate  # noqa: E402
from sapiens2.curate.sources import collect_items  # noqa: E402
from sapiens2.curate.stages import REASONS, Batch  # noqa: E402
from sapiens2.fetch import CheckpointNotFoundError  # noqa: E402
from tests.curate.conftest import StandInClip, aesthetic_state, colour_detector  # noqa: E402

WIDTH = 16  # the tiny CLIP's projection width


def _tiny_clip(folder: Path, preprocessor: dict | None = None) -> Path:
    """A random CLIP ViT (2 layers, width 32, 32 px, patch 8) with a tiny BPE vocabulary, saved as a
    transformers checkpoint folder (safetensors)."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    chars = "abcdefghijklmnopqrstuvwxyz0123456789"
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        vocab.update({c + suffix: len(vocab) + i for i, c in enumerate(chars)})
    vocab["at</w>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\na t</w>\n")
    tokenizer = CLIPTokenizer.from_pretrained(folder)
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=WIDTH)
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    if preprocessor is not None:
        (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    return folder


PREPROCESSOR = {"size": {"shortest_edge": 40}, "crop_size": {"height": 32, "width": 32}, "do_center_crop": True,
                "image_mean": [0.5, 0.4, 0.3], "image_std": [0.2, 0.25, 0.3], "resample": 3}


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    return _tiny_clip(tmp_path_factory.mktemp("clip"), PREPROCESSOR)


@pytest.fixture(scope="module")
def embedder(tiny_clip) -> ClipEmbedder:
    return ClipEmbedder.load(str(tiny_clip), batch_size=2)


def _images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (50 + 9 * i, 70 - 5 * i, 3), np.uint8) for i in range(n)]


# --- the CLIP wrapper -----------------------------------------------------------------------------------

def test_loader_reads_a_folder_and_embeds_batched_unit_vectors(embedder):
    assert embedder.dim == WIDTH and embedder.preprocess == ClipPreprocess(40, (32, 32), (0.5, 0.4, 0.3),
                                                                           (0.2, 0.25, 0.3))
    images = _images(3)
    feats = embedder.image_features(images)
    assert feats.shape == (3, WIDTH) and feats.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(feats[2], embedder([images[2]])[0], atol=1e-5)  # batches of 2 change nothing
    assert embedder([]).shape == (0, WIDTH)
    expected = embedder.model.logit_scale.exp().item()
    assert embedder.logit_scale == pytest.approx(min(expected, 100.0))


def test_text_features_are_unit_and_computed_once_per_prompt_set(embedder, monkeypatch):
    calls = []
    forward = embedder.model.text_model.forward
    monkeypatch.setattr(embedder.model.text_model, "forward", lambda *a, **k: calls.append(1) or forward(*a, **k))
    prompts = ("a photo of a cat", "a 3d render", "at")
    first = embedder.text_features(prompts)
    assert first.shape == (3, WIDTH)
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1, atol=1e-5)
    assert embedder.text_features(list(prompts)) is first and len(calls) == 1
    assert not np.allclose(first[0], first[1])
    embedder.text_features(prompts[:2])
    assert len(calls) == 2


def test_preprocess_is_clips_resize_crop_and_normalisation():
    pre = ClipPreprocess(4, (4, 4), (0.5, 0.5, 0.5), (0.5, 0.25, 1.0))
    rng = np.random.default_rng(1)
    tall = rng.integers(0, 255, (8, 4, 3), np.uint8)  # short side already 4: crop only, rows 2..5
    got = pre([tall])[0]
    want = (tall[2:6].astype(np.float32) / 255 - 0.5) / np.array([0.5, 0.25, 1.0], np.float32)
    np.testing.assert_allclose(got, want.transpose(2, 0, 1), atol=1e-6)
    big = rng.integers(0, 255, (40, 80, 3), np.uint8)
    assert pre([big]).shape == (1, 3, 4, 4)
    wide = ClipPreprocess(4, (6, 6))([tall])  # a crop larger than the resized image is zero-padded (in 0..1)
    assert wide.shape == (1, 3, 6, 6)
    np.testing.assert_allclose(wide[0, :, 0, 0], (0 - np.array(CLIP_MEAN)) / ClipPreprocess().std, atol=1e-5)


def test_preprocess_defaults_without_a_config_and_refuses_a_bad_one(tmp_path):
    assert ClipPreprocess.from_folder(tmp_path, 336) == ClipPreprocess(336, (336, 336))
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"size": {"height": 10}}))
    with pytest.raises(ValueError, match=r"preprocessor_config\.json.*KeyError"):
        ClipPreprocess.from_folder(tmp_path, 224)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"size": 32, "image_std": [0, 1, 1]}))
    with pytest.raises(ValueError, match="std > 0"):
        ClipPreprocess.from_folder(tmp_path, 224)


def test_a_folder_without_safetensors_is_refused(tiny_clip, tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    for name in ("config.json", "vocab.json", "merges.txt"):
        (folder / name).write_bytes((tiny_clip / name).read_bytes())
    (folder / "pytorch_model.bin").write_bytes(b"a pickle we never open")
    with pytest.raises(CheckpointNotFoundError, match=r"pickled \(CLIP checkpoint folder\) lacks model\.safetensors"):
        ClipEmbedder.load(str(folder))


def test_a_hub_id_offline_and_not_cached_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(CheckpointNotFoundError) as err:
        ClipEmbedder.load("openai/clip-vit-large-patch14")
    line = err.value.line
    assert "\n" not in line and "hub repo openai/clip-vit-large-patch14" in line and "HF_HUB_OFFLINE=1" in line
    assert "hf download openai/clip-vit-large-patch14" in line
    with pytest.raises(CheckpointNotFoundError, match="not a checkpoint folder here, nor a hub id"):
        ClipEmbedder.load(str(tmp_path / "no" / "such" / "folder"))


def test_zero_shot_is_a_softmax_of_scaled_cosines():
    img = np.array([[1.0, 0.0], [0.6, 0.8]], np.float32)
    txt = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], np.float32)
    p = zero_shot(img, txt, 10.0)
    logits = 10 * img @ txt.T
    want = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(p, want, rtol=1e-5)
    assert zero_shot(img * 0 + 1, txt, 1000.0).sum(1) == pytest.approx([1, 1])  # no overflow


# --- the aesthetic head ---------------------------------------------------------------------------------

def test_aesthetic_head_has_the_official_layout_and_loads_pth_without_torch_load(tmp_path, monkeypatch):
    shapes = expected_aesthetic_shapes(768, linear=False)
    assert shapes == {"layers.0.weight": (1024, 768), "layers.0.bias": (1024,), "layers.2.weight": (128, 1024),
                      "layers.2.bias": (128,), "layers.4.weight": (64, 128), "layers.4.bias": (64,),
                      "layers.6.weight": (16, 64), "layers.6.bias": (16,), "layers.7.weight": (1, 16),
                      "layers.7.bias": (1,)}
    path = tmp_path / "sac+logos+ava1-l14-linearMSE.pth"
    torch.save(aesthetic_state(bias=2.0, gain=5.0), path)
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load on a downloaded file"))
    scorer = AestheticScorer.load(path)
    feats = np.zeros((2, 768), np.float32)
    feats[1, 4] = 0.5
    np.testing.assert_allclose(scorer(feats), [2.0, 4.5], rtol=1e-6)
    with pytest.raises(ValueError, match=r"takes \(N, 768\)"):
        scorer(np.zeros((2, 16), np.float32))


def test_aesthetic_head_random_weights_match_a_plain_mlp(tmp_path):
    gen = torch.Generator().manual_seed(0)
    state = {k: torch.randn(v, generator=gen) * 0.1 for k, v in expected_aesthetic_shapes(768, False).items()}
    from safetensors.torch import save_file

    save_file(state, str(tmp_path / "head.safetensors"))
    x = torch.randn(3, 768, generator=gen)
    want = x
    for i in (0, 2, 4, 6, 7):  # no activations: eval-mode dropout is the identity
        want = want @ state[f"layers.{i}.weight"].T + state[f"layers.{i}.bias"]
    got = AestheticScorer.load(tmp_path / "head.safetensors")(x.numpy())
    np.testing.assert_allclose(got, want[:, 0].numpy(), rtol=1e-5, atol=1e-6)


def test_the_linear_laion_head_loads_too(tmp_path):
    path = tmp_path / "sa_0_4_vit_l_14_linear.pth"
    torch.save({"weight": torch.full((1, 768), 0.01), "bias": torch.tensor([1.0])}, path)
    scorer = AestheticScorer.load(path)
    assert scorer(np.ones((1, 768), np.float32))[0] == pytest.approx(1.0 + 7.68)


@pytest.mark.parametrize("edit, words", [
    (lambda s: s.pop("layers.7.bias"), "missing layers.7.bias"),
    (lambda s: s.update({"layers.6.weight": torch.zeros(8, 64)}), "layers.6.weight [8, 64] (expected [16, 64])"),
    (lambda s: s.update({"layers.8.weight": torch.zeros(1)}), "unexpected layers.8.weight"),
])
def test_a_wrong_layout_names_the_file_and_the_keys(tmp_path, edit, words):
    state = aesthetic_state()
    edit(state)
    path = tmp_path / "wrong_head.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="wrong_head.pth: is not a LAION aesthetic head") as err:
        AestheticScorer.load(path)
    assert words in str(err.value)


def test_a_missing_local_head_file_and_a_width_mismatch(tiny_clip, tmp_path):
    config = ClipConfig(model=str(tiny_clip), aesthetic_repo="", aesthetic_file=str(tmp_path / "nope.pth"))
    with pytest.raises(CheckpointNotFoundError, match=r"nope\.pth \(aesthetic head\): no such file"):
        load_clip_models(config)
    torch.save(aesthetic_state(), tmp_path / "head.pth")
    with pytest.raises(ValueError, match=r"head\.pth: the aesthetic head takes 768-wide embeddings but .* gives 16"):
        load_clip_models(dataclasses.replace(config, aesthetic_file=str(tmp_path / "head.pth")))


# --- the stage and its decisions -------------------------------------------------------------------------

def _stand_in(config: ClipConfig = ClipConfig()) -> ClipModels:
    """The stand-in CLIP with the synthetic head (3 + 10 x contrast axis), or no head when `config` has none."""
    head = AestheticScorer(build_aesthetic_head(aesthetic_state(), "synthetic")) if config.aesthetic else None
    return ClipModels(StandInClip(config), head)


def _batch(paths) -> Batch:
    return Batch([collect_items([str(p)])[0] for p in paths])


def test_planted_cases_get_their_reasons_in_stage_order(clip_corpus):
    c = clip_corpus
    paths = [*c.originals, *c.cartoons, *c.text_overlays, *c.dull]
    out = ClipStage(_stand_in())(_batch(paths))
    reasons = dict(zip(paths, out["reason"]))
    assert [reasons[p] for p in c.originals] == [None] * len(c.originals)
    assert all(reasons[p] == "not_photo" for p in c.cartoons)
    assert all(reasons[p] == "text_overlay" for p in c.text_overlays)
    assert all(reasons[p] == "low_aesthetic" for p in c.dull)
    rows = {p: {k: out[k][i] for k in out} for i, p in enumerate(paths)}
    cartoon = rows[c.cartoons[0]]
    assert cartoon["photo_score"] < 0.01 and cartoon["clip_label"] in ClipConfig().not_photo_prompts
    assert "closest prompt" in cartoon["detail"]
    assert rows[c.originals[0]]["clip_label"] in ClipConfig().photo_prompts
    assert rows[c.text_overlays[0]]["text_score"] > 0.99 and rows[c.originals[0]]["text_score"] < 0.01
    assert rows[c.dull[0]]["aesthetic"] < 4.5 < rows[c.originals[0]]["aesthetic"]
    assert "aesthetic 3." in rows[c.dull[0]]["detail"]
    assert REASONS.index("no_person") < REASONS.index("not_photo") < REASONS.index("text_overlay") \
        < REASONS.index("low_aesthetic") < REASONS.index("duplicate")


@pytest.mark.parametrize("change, dropped", [
    ({"min_photo_score": 0.0}, {"text_overlay": 3, "low_aesthetic": 5}),  # cartoons: no contrast axis
    ({"max_text_score": 1.0}, {"not_photo": 3, "low_aesthetic": 2}),
    ({"min_aesthetic": 0.0}, {"not_photo": 3, "text_overlay": 3}),
    ({"min_aesthetic": 9.0}, {"not_photo": 3, "text_overlay": 3, "low_aesthetic": 8}),
    ({"aesthetic": False}, {"not_photo": 3, "text_overlay": 3}),
])
def test_thresholds_move_the_decisions(clip_corpus, change, dropped):
    c = clip_corpus
    config = dataclasses.replace(ClipConfig(), **change)
    out = ClipStage(_stand_in(config), config)(_batch([*c.originals, *c.cartoons, *c.text_overlays, *c.dull]))
    assert {r: out["reason"].count(r) for r in set(out["reason"]) if r} == dropped
    assert (out["aesthetic"][0] is None) == (not config.aesthetic)


def test_custom_prompt_sets_are_used(clip_corpus):
    config = ClipConfig(photo_prompts=("a real person",), not_photo_prompts=("a toon",),
                        text_prompts=("words",), no_text_prompts=("no words",))
    out = ClipStage(_stand_in(config), config)(_batch(clip_corpus.cartoons[:1] + clip_corpus.originals[:1]))
    assert out["clip_label"] == ["a toon", "a real person"] and out["reason"][0] == "not_photo"


def test_the_stage_builds_from_a_picklable_loader_on_first_use(tiny_clip, clip_corpus):
    config = ClipConfig(model=str(tiny_clip), aesthetic=False, min_photo_score=0.0, max_text_score=1.0)
    stage = ClipStage(clip_loader(config), config)
    again = pickle.loads(pickle.dumps(stage))
    assert not isinstance(again.models, ClipModels)
    out = again(_batch(clip_corpus.originals[:2]))
    assert isinstance(again.models, ClipModels) and out["reason"] == [None, None]
    assert all(0 <= v <= 1 for v in out["photo_score"] + out["text_score"]) and out["aesthetic"] == [None, None]


def test_settings_ignore_device_and_batch_size():
    a, b = ClipStage(_stand_in(), ClipConfig()), ClipStage(_stand_in(), ClipConfig(device="cuda", batch_size=7))
    assert a.settings == b.settings and a.settings != ClipStage(_stand_in(), ClipConfig(min_aesthetic=5.0)).settings


# --- engine, report, config ------------------------------------------------------------------------------

PIPELINE = CurateConfig(dedup=DedupConfig(deep=False), cluster=ClusterConfig(enabled=False))


def test_curate_with_the_clip_stage_end_to_end(clip_corpus, tmp_path):
    c = clip_corpus
    result = curate(collect_items([str(c.root)]), tmp_path, PIPELINE, detector=colour_detector, clip=_stand_in(),
                    shards=False)
    assert result.table.schema == MANIFEST_SCHEMA
    rows = {Path(r["path"]): r for r in result.table.to_pylist()}
    for paths, reason in ((c.cartoons, "not_photo"), (c.text_overlays, "text_overlay"), (c.dull, "low_aesthetic"),
                          (c.no_person, "no_person"), (c.small, "too_small")):
        assert [rows[p]["reason"] for p in paths] == [reason] * len(paths)
    assert all(rows[p]["aesthetic"] is None for p in c.no_person)  # never reached the stage
    assert all(rows[p]["reason"] in (None, "duplicate") and rows[p]["photo_score"] > 0.99 for p in c.originals)
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    stages = {s["reason"]: s["dropped"] for s in report["stages"]}
    assert (stages["not_photo"], stages["text_overlay"], stages["low_aesthetic"]) == (3, 3, 2)
    html = (tmp_path / "report" / "index.html").read_text()
    for words in ("aesthetic (LAION, 1-10)", "photo score", "text score", "reason-not_photo.png",
                  "reason-text_overlay.png", "reason-low_aesthetic.png"):
        assert words in html
    assert result.rows["clip"] == len(rows) - len(c.corrupt) - len(c.small) - len(c.no_person)


def test_resume_reuses_the_clip_parts(clip_corpus, tmp_path):
    items = collect_items([str(p) for p in clip_corpus.originals[:3]])
    first = curate(items, tmp_path, PIPELINE, detector=colour_detector, clip=_stand_in(), shards=False, report=False)
    again = curate(items, tmp_path, PIPELINE, detector=colour_detector, resume=True, shards=False, report=False,
                   clip=lambda: pytest.fail("a resumed run loaded CLIP"))
    assert again.table.equals(first.table) and "clip" not in again.computed and again.reused["clip"] == 1


def test_a_disabled_clip_stage_needs_no_model_and_leaves_nulls(clip_corpus, tmp_path):
    config = dataclasses.replace(PIPELINE, clip=ClipConfig(enabled=False))
    assert "clip" not in [s.name for s in build_stages(config, colour_detector, None)]
    result = curate(collect_items([str(p) for p in clip_corpus.cartoons]), tmp_path, config, detector=colour_detector,
                    shards=False, report=False)
    assert all(r["kept"] and r["aesthetic"] is None and r["clip_label"] is None for r in result.table.to_pylist())
    with pytest.raises(ValueError, match=r"clip stage needs CLIP models \(\[clip\] enabled = false"):
        build_stages(PIPELINE, colour_detector, None)


def test_embed_source_clip_reuses_the_clip_embeddings(clip_corpus, tmp_path):
    config = CurateConfig(embed=EmbedConfig(source="clip"), cluster=ClusterConfig(levels=(2,)))
    stages = build_stages(config, colour_detector, None, clip=_stand_in())
    assert [s.name for s in stages] == ["decode", "person", "clip", "phash"] and "embedding" in stages[2].fields
    items = collect_items([str(p) for p in clip_corpus.originals + clip_corpus.text_overlays])
    result = curate(items, tmp_path, config, detector=colour_detector, clip=_stand_in(), shards=False, report=False)
    rows = result.table.to_pylist()
    assert "embed" not in result.computed and result.computed["cluster"] == 1
    assert all(r["cluster"] is not None for r in rows if r["kept"]) and "embedding" not in result.table.column_names
    with pytest.raises(ValueError, match=r"embed.source = \"clip\" needs the \[clip\] stage"):
        CurateConfig(embed=EmbedConfig(source="clip"), clip=ClipConfig(enabled=False))


def test_clip_config_defaults_and_toml(tmp_path):
    c = CurateConfig().clip
    assert c.enabled and c.model == "openai/clip-vit-large-patch14" and c.min_aesthetic == 4.5
    assert c.aesthetic_file == "sac+logos+ava1-l14-linearMSE.pth" and c.text_detector == "clip"
    p = tmp_path / "c.toml"
    p.write_text('[clip]\nphoto_prompts = ["a photo"]\nmin_aesthetic = 5\ntext_detector = "strokes"\n'
                 '[embed]\nsource = "clip"\n')
    cfg = load_config(p)
    assert cfg.clip.photo_prompts == ("a photo",) and cfg.clip.min_aesthetic == 5.0 and cfg.embed.source == "clip"
    assert cfg.clip.not_photo_prompts == c.not_photo_prompts


# --- the command line ------------------------------------------------------------------------------------

def test_curate_command_with_a_local_clip_and_head(tiny_clip, clip_corpus, tmp_path, capsys):
    head = tmp_path / "head.pth"
    state = {k: torch.zeros(v) for k, v in expected_aesthetic_shapes(WIDTH, linear=False).items()}
    state["layers.7.bias"][0] = 6.0  # everything scores 6
    torch.save(state, head)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[person]\nenabled = false\n[dedup]\ndeep = false\n[cluster]\nenabled = false\n'
                   f'[clip]\nmodel = "{tiny_clip}"\naesthetic_repo = ""\naesthetic_file = "{head}"\n'
                   'min_photo_score = 0.0\nmax_text_score = 1.0\n')
    out = tmp_path / "out"
    assert main(["curate", *map(str, clip_corpus.originals[:2] + clip_corpus.cartoons[:1]), "--out", str(out),
                 "--config", str(cfg), "--no-shards"]) == 0
    rows = pq.read_table(out / "manifest.parquet").to_pylist()
    assert [r["aesthetic"] for r in rows] == pytest.approx([6.0] * 3)
    assert all(r["photo_score"] is not None and r["clip_label"] for r in rows)


def test_curate_command_without_clip_weights_offline(clip_corpus, tmp_path):
    import sapiens2

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "PYTHONPATH": str(Path(sapiens2.__file__).resolve().parents[1])}
    env.pop("HF_HUB_CACHE", None)
    (tmp_path / "c.toml").write_text("[person]\nenabled = false\n[dedup]\ndeep = false\n[cluster]\nenabled = false\n")
    code = (f"from sapiens2.cli import main; raise SystemExit(main(['curate', {str(clip_corpus.root)!r}, '--out', "
            "'o', '--config', 'c.toml']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("missing: ")]
    assert len(lines) == 2, proc.stderr
    assert lines[0].startswith("missing: model.safetensors (CLIP, hub repo openai/clip-vit-large-patch14, with 7 ")
    assert "sac+logos+ava1-l14-linearMSE.pth (aesthetic head, hub repo camenduru/improved-aesthetic-predictor)" \
        in lines[1]
    assert all("HF_HUB_OFFLINE=1" in line and "hf download" in line for line in lines)
    assert "Traceback" not in proc.stderr and not (tmp_path / "o").exists()



def test_strokes_text_detector_is_selectable(clip_corpus):
    config = ClipConfig(text_detector="strokes", aesthetic=False)
    out = ClipStage(_stand_in(config), config)(_batch([*clip_corpus.originals, *clip_corpus.text_overlays]))
    n = len(clip_corpus.originals)
    assert out["reason"][:n] == [None] * n and out["reason"][n:] == ["text_overlay"] * 3
    assert all("(strokes)" in d for d in out["detail"][n:])


# --- the strokes text detector ---------------------------------------------------------------------------

def _rgb(path) -> np.ndarray:
    import cv2

    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def test_strokes_detector_catches_planted_overlays_and_passes_the_rest(clip_corpus):
    from sapiens2.curate.textdetect import text_lines, text_overlay_score

    c = clip_corpus
    for p in c.text_overlays:
        assert text_overlay_score(_rgb(p)) > 0.6, p.name
    clean = [*c.originals, *c.copies, *c.cartoons, *c.dull, *c.no_person]
    scores = {p.name: text_overlay_score(_rgb(p)) for p in clean}
    assert max(scores.values()) < 0.5, scores
    meme = _rgb(next(p for p in c.text_overlays if "meme" in p.name))
    tops = sorted(y / meme.shape[0] for _, y, _, _, _ in text_lines(meme))
    assert tops[0] < 0.15 and tops[-1] > 0.8  # the top and the bottom line of the meme


def test_strokes_detector_on_a_real_photo():
    """The project's demo photo (an astronaut with patches and a flag) is clean; meme text on it is caught."""
    from sapiens2.curate.textdetect import text_overlay_score
    from tests.curate.conftest import outlined_text

    photo = _rgb(Path(__file__).resolve().parents[2] / "sapiens2" / "data" / "demo" / "astronaut.jpg")
    assert text_overlay_score(photo) < 0.5
    meme = photo.copy()
    outlined_text(meme, "me when the curation", (20, 40), 0.9, 2)
    assert text_overlay_score(meme) > 0.6
    import cv2

    assert text_overlay_score(cv2.cvtColor(meme, cv2.COLOR_RGB2GRAY)) == text_overlay_score(meme)  # grey input
    assert text_overlay_score(np.full((5, 7, 3), 128, np.uint8)) == 0.0
