"""The model-loader convention: a stage's model given as a picklable `Loader` is built once, on first use, in
the process that runs the stage; one that cannot be built is a clear error naming it."""

import pickle

import pytest

from sapiens2.cli import main
from sapiens2.curate.config import ClipConfig, ClusterConfig, CurateConfig, DedupConfig
from sapiens2.curate.engine import curate
from sapiens2.curate.sources import collect_items
from sapiens2.curate.stages import Loader, ModelLoadError, PersonStage, built
from tests.curate.conftest import colour_detector

BUILT: list[str] = []


def counted_detector(tag: str):
    BUILT.append(tag)
    return colour_detector


def missing_model(path: str):
    raise FileNotFoundError(f"{path}: no such checkpoint file")


def test_a_loader_travels_by_pickle_and_builds_its_model():
    loader = Loader.of(counted_detector, "x")
    assert pickle.loads(pickle.dumps(loader)) == loader
    assert built(loader) is colour_detector and built(colour_detector) is colour_detector
    stage = pickle.loads(pickle.dumps(PersonStage(loader)))
    assert stage.holds_model and isinstance(stage.detector, Loader)


def test_the_local_engine_builds_each_model_once_on_first_use(corpus, tmp_path):
    BUILT.clear()
    config = CurateConfig(dedup=DedupConfig(deep=False), cluster=ClusterConfig(enabled=False),
                          clip=ClipConfig(enabled=False))
    items = collect_items([str(corpus.root)])
    curate(items, tmp_path, config, detector=Loader.of(counted_detector, "d"), shards=False, report=False)
    assert BUILT == ["d"]
    BUILT.clear()  # a resumed run that computes nothing never builds the model
    curate(items, tmp_path, config, detector=Loader.of(counted_detector, "d"), resume=True, shards=False,
           report=False)
    assert BUILT == []


def test_a_model_that_cannot_be_built_names_its_loader(corpus, tmp_path):
    config = CurateConfig(dedup=DedupConfig(deep=False), cluster=ClusterConfig(enabled=False),
                          clip=ClipConfig(enabled=False))
    with pytest.raises(ModelLoadError, match=r"cannot load a model \(missing_model\): w.pt: no such checkpoint"):
        curate(collect_items([str(corpus.root)]), tmp_path, config, detector=Loader.of(missing_model, "w.pt"),
               report=False)


def test_ray_options_are_checked_by_the_parser(corpus, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["curate", str(corpus.root), "--out", str(tmp_path), "--engine", "ray", "--actors", "0"])
    assert exit_.value.code == 2 and "--actors: must be at least 1, got 0" in capsys.readouterr().err


def test_ray_actors_share_the_gpus_by_default_and_must_fit():
    from sapiens2.curate.ray_engine import CurateJobFailed, RayEngine, _check_resources, gpus_per_actor
    from sapiens2.runner.ray_stages import Stage

    assert gpus_per_actor(RayEngine(actors=8), 2, 8) == 0.5  # detector and embedder actors share the 8 GPUs
    assert gpus_per_actor(RayEngine(actors=1), 2, 8) == 1.0 and gpus_per_actor(RayEngine(), 2, 0) == 0.0
    assert gpus_per_actor(RayEngine(gpus_per_actor=0.25), 2, 8) == 0.25
    pools = [Stage("person", dict, actors=4, num_cpus=1, num_gpus=1), Stage("decode", dict)]
    _check_resources(pools, cpus=16, gpus=4)
    with pytest.raises(CurateJobFailed, match="ask for 4 GPUs, the cluster has 2"):
        _check_resources(pools, cpus=16, gpus=2)
    with pytest.raises(CurateJobFailed, match="reserve 4 CPUs of the cluster's 4"):
        _check_resources(pools, cpus=4, gpus=4)
