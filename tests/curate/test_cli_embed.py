"""`sapiens2 curate` from the command line, and the default embedder on a tiny random backbone."""

import json
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from sapiens2.cli import main
from sapiens2.curate.embed import BackboneEmbedder
from sapiens2.models import BackboneConfig, build_model

NO_MODELS = "[person]\nenabled = false\n[clip]\nenabled = false\n[dedup]\ndeep = false\n[cluster]\nenabled = false\n"


def test_building_the_parser_imports_nothing_heavy():
    code = ("import sys; from sapiens2.cli import build_parser; build_parser(); "
            "print([m for m in ('torch', 'pyarrow', 'faiss') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_curate_command_end_to_end_and_resume(corpus, tmp_path, capsys):
    cfg = tmp_path / "curate.toml"
    cfg.write_text(NO_MODELS)
    out = tmp_path / "out"
    assert main(["curate", str(corpus.root), "--out", str(out), "--config", str(cfg)]) == 0
    printed = capsys.readouterr().out
    assert "kept; dropped:" in printed and "decode 2" in printed and "too_small 3" in printed
    table = pq.read_table(out / "manifest.parquet")
    assert table.num_rows == len(list(corpus.root.iterdir()))
    assert (out / "report" / "index.html").is_file() and list((out / "shards").glob("*.tar"))
    assert main(["curate", str(corpus.root), "--out", str(out), "--config", str(cfg)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["curate", str(corpus.root), "--out", str(out), "--config", str(cfg), "--resume"]) == 0
    report = json.loads((out / "report" / "report.json").read_text())
    assert report["computed_parts"] == {} and report["reused_parts"]["decode"] >= 1


@pytest.mark.parametrize("args, words", [
    (["--config", "{tmp}/bad.toml"], "unknown table [nope]"),
    (["--config", "{tmp}/none.toml"], "cannot read the config"),
])
def test_curate_command_usage_errors(corpus, tmp_path, capsys, args, words):
    (tmp_path / "bad.toml").write_text("[nope]\n")
    args = [a.format(tmp=tmp_path) for a in args]
    assert main(["curate", str(corpus.root), "--out", str(tmp_path / "o"), *args]) == 2
    assert words in capsys.readouterr().err


def test_curate_command_missing_source(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(NO_MODELS)
    assert main(["curate", str(tmp_path / "nothing-here"), "--out", str(tmp_path / "o"), "--config", str(cfg)]) == 2
    assert "nothing-here" in capsys.readouterr().err


def test_backbone_embedder_pools_patch_tokens():
    net = build_model(BackboneConfig(embed_dim=32, depth=2, num_heads=2), "pretrain")
    embed = BackboneEmbedder(net, size=32, batch_size=2)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (40 + 7 * i, 50, 3), np.uint8) for i in range(3)]
    feats = embed(images)
    assert feats.shape == (3, 32) and feats.dtype == np.float32
    np.testing.assert_allclose(feats[1], embed([images[1]])[0], rtol=1e-4, atol=1e-5)  # batching changes nothing
    assert embed([]).shape[0] == 0
    with pytest.raises(TypeError, match="Sapiens2 backbone"):
        BackboneEmbedder(object())


def test_curate_command_without_weights_says_what_to_download(corpus, tmp_path):
    """The default detector, CLIP, aesthetic head and embedder, no weights and no hub: one line per file, exit 2."""
    import os
    from pathlib import Path

    import sapiens2

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "SAPIENS_CHECKPOINT_ROOT": str(tmp_path / "none"),
           "PYTHONPATH": str(Path(sapiens2.__file__).resolve().parents[1])}  # this checkout, from another cwd
    code = f"from sapiens2.cli import main; raise SystemExit(main(['curate', {str(corpus.root)!r}, '--out', 'o']))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert [line.split()[2] for line in lines if line.startswith("missing: ")] == [
        "(rtmdet-m-person):", "(CLIP,", "(aesthetic", "(sapiens2-pretrain-0.4b):"]
    assert "sapiens2 download rtmdet-m-person sapiens2-pretrain-0.4b" in lines[-1]
    assert "Traceback" not in proc.stderr and not (tmp_path / "o").exists()
