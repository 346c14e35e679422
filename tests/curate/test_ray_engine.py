"""`--engine ray` on the session's local Ray (2 CPUs): the local engine's manifest and shards row for row, one
run resumed by the other engine, and a failing model stage reported as data. Three Ray jobs in all."""

import dataclasses
import filecmp
import shutil
import tarfile

import pytest

pytest.importorskip("ray")
pq = pytest.importorskip("pyarrow.parquet")

from sapiens2.cli import main  # noqa: E402

from sapiens2.curate.config import ClusterConfig, CurateConfig, EngineConfig, HeadConfig, OutputConfig  # noqa: E402
from sapiens2.curate.engine import curate  # noqa: E402
from sapiens2.curate.ray_engine import CurateJobFailed, RayEngine  # noqa: E402
from sapiens2.curate.sources import collect_items  # noqa: E402
from sapiens2.curate.stages import Loader  # noqa: E402
from tests.curate.conftest import (  # noqa: E402
    colour_detector, load_broken_detector, load_colour_detector, load_face_predictor, load_stand_in_clip,
    load_thumb_embedder, thumb_embedder,
)
from tests.curate.test_cli_embed import NO_MODELS  # noqa: E402

# every stage, the four model stages on stand-ins; batches of 12: the 49-image corpus is 5 batches, so the
# job has several in flight
CONFIG = CurateConfig(head=HeadConfig(enabled=True), cluster=ClusterConfig(levels=(3,), target=6),
                      output=OutputConfig(shard_size=4, max_side=200), engine=EngineConfig(batch_size=12))
# four actor pools (detector, CLIP, pose, embedder) of a quarter CPU each leave one of the 2 CPUs to the decode
# and hash tasks
RAY = RayEngine(actors=1, cpus_per_actor=0.25)


def _loaders(detector=load_colour_detector):
    return {"detector": Loader.of(detector), "clip": Loader.of(load_stand_in_clip),
            "head": Loader.of(load_face_predictor), "embedder": Loader.of(load_thumb_embedder)}


@pytest.fixture(scope="module")
def local_run(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("local")
    result = curate(collect_items([str(corpus.root)]), out, CONFIG, detector=colour_detector, embedder=thumb_embedder,
                    clip=load_stand_in_clip(), head=load_face_predictor(), report=False)
    return out, result


@pytest.fixture(scope="module")
def ray_run(corpus, tmp_path_factory, ray_session):
    out = tmp_path_factory.mktemp("ray")
    result = curate(collect_items([str(corpus.root)]), out, CONFIG, **_loaders(), engine=RAY)
    return out, result


def _members(folder):
    shards = sorted(folder.glob("shard-*.tar"))
    out = {}
    for shard in shards:
        with tarfile.open(shard) as tar:
            out[shard.name] = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    return out


def test_ray_gives_the_local_manifest_row_for_row_and_the_same_shards(local_run, ray_run):
    (local_out, local), (ray_out, ray) = local_run, ray_run
    assert ray.table.equals(local.table)
    assert ray.kept == 6 and ray.cluster_sizes == local.cluster_sizes
    assert ray.computed == local.computed and set(ray.rows) == set(local.rows)
    assert _members(ray_out / "shards") == _members(local_out / "shards")
    assert (ray_out / "report" / "index.html").is_file()


def test_a_local_run_resumes_a_ray_run_and_the_other_way(corpus, local_run, ray_run, tmp_path):
    items = collect_items([str(corpus.root)])
    # ray -> local: every part is there, nothing is computed
    shutil.copytree(ray_run[0] / "parts", tmp_path / "a" / "parts")
    again = curate(items, tmp_path / "a", CONFIG, **_loaders(), resume=True, shards=False, report=False)
    assert again.computed == {} and again.table.equals(local_run[1].table)
    # local -> ray, with the person and embed parts of one batch lost: only those two are computed
    shutil.copytree(local_run[0] / "parts", tmp_path / "b" / "parts")
    lost = sorted((tmp_path / "b" / "parts").glob("01-person-*/*.parquet"))[2].name
    for folder in ("01-person-*", "05-embed-*"):
        next((tmp_path / "b" / "parts").glob(f"{folder}/{lost}")).unlink()
    resumed = curate(items, tmp_path / "b", CONFIG, **_loaders(), resume=True, shards=False, report=False,
                     engine=RAY)
    assert resumed.computed == {"person": 1, "embed": 1}
    assert resumed.reused["decode"] == 5 and resumed.reused["dedup"] == 1
    assert resumed.table.equals(local_run[1].table)
    for part in (tmp_path / "b" / "parts").glob("*/*.parquet"):  # the same bytes written again
        assert filecmp.cmp(part, local_run[0] / "parts" / part.parent.name / part.name, shallow=False)


def test_a_failing_model_stage_fails_its_batches_not_the_job(corpus, tmp_path, ray_session):
    items = collect_items([str(corpus.root)])
    with pytest.raises(CurateJobFailed, match=r"5 of 5 batches failed.*stage person: ValueError: .*broken"):
        curate(items, tmp_path, CONFIG, **_loaders(load_broken_detector), engine=RAY)
    assert len(list(tmp_path.glob("parts/00-decode-*/*.parquet"))) == 5  # the decode parts stay, for --resume
    assert not (tmp_path / "manifest.parquet").exists()


def test_actors_must_leave_a_cpu_for_the_cpu_stages(corpus, tmp_path, ray_session):
    with pytest.raises(CurateJobFailed, match="reserve 2 CPUs of the cluster's 2"):
        curate(collect_items([str(corpus.root)]), tmp_path, CONFIG, **_loaders(),
               engine=dataclasses.replace(RAY, cpus_per_actor=0.5))
    with pytest.raises(ValueError, match="actors must be >= 1"):
        RayEngine(actors=0)


def test_curate_command_with_the_ray_engine(corpus, tmp_path, capsys, ray_session):
    cfg = tmp_path / "curate.toml"
    cfg.write_text(NO_MODELS)
    local, ray = tmp_path / "local", tmp_path / "ray"
    assert main(["curate", str(corpus.root), "--out", str(local), "--config", str(cfg), "--no-shards"]) == 0
    assert main(["curate", str(corpus.root), "--out", str(ray), "--config", str(cfg), "--no-shards",
                 "--engine", "ray"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].replace(str(local), "") == out[3].replace(str(ray), "")  # the same summary line
    assert pq.read_table(ray / "manifest.parquet").equals(pq.read_table(local / "manifest.parquet"))
