"""fit --engine ray: the same run folder and oof.npy as a sequential fit; the embedding cache shared by Ray tasks."""

import numpy as np
import pytest

from embedensemble.backbones import torch_threads
from embedensemble.cache import EmbeddingCache
from embedensemble.config import CVConfig, EnsembleConfig, MemberConfig
from embedensemble.data import load_dataset
from embedensemble.fileio import load_array, read_json
from embedensemble.fitting import fit_members
from embedensemble.run_folder import RunFolder

from .synthetic import write_kaggle
from .tiny_models import make_tiny_st_encoder

ray = pytest.importorskip("ray")

FT_PARAMS = {"adapter": "none", "lr": 2e-3, "max_steps": 3, "batch_size": 8, "warmup_ratio": 0.0, "save_every_steps": 1000, "predict_batch_size": 16}


@pytest.fixture(scope="module")
def ray_session():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    yield ray
    ray.shutdown()


def _config(encoder, cache):
    return EnsembleConfig(
        name="ray-fit",
        members=[
            MemberConfig(name="tiny-ft", kind="pooled-finetune", backbone=str(encoder), params=FT_PARAMS),
            MemberConfig(name="tfidf-logreg", features="tfidf", head="logreg"),
            MemberConfig(name="tiny-logreg", features=str(encoder), head="logreg"),
            # reads tiny-ft: submitted only once tiny-ft is gathered, while the others run
            MemberConfig(name="ft-logreg", features="finetuned:tiny-ft", head="logreg"),
        ],
        cv=CVConfig(n_folds=3),
        cache_dir=str(cache),
    )


@pytest.mark.slow
def test_ray_fit_writes_the_sequential_run_folder(tmp_path, ray_session):
    from embedensemble.distributed.ray_fit import fit_members_ray

    encoder = make_tiny_st_encoder(tmp_path / "encoder")
    splits = load_dataset(write_kaggle(tmp_path / "data", n_train=90, n_test=20))
    config = _config(encoder, tmp_path / "cache-seq")
    with torch_threads(1):  # Ray tasks run one thread each: the same float reductions
        fit_members(config, splits.train, tmp_path / "seq", test=splits.test)
    config.cache_dir = str(tmp_path / "cache-ray")  # a cold cache, filled by concurrent tasks
    fit_members_ray(config, splits.train, tmp_path / "ray", test=splits.test, num_workers=2)

    seq, par = RunFolder(tmp_path / "seq"), RunFolder(tmp_path / "ray")
    for member in config.members:
        a, b = seq.member(member.name), par.member(member.name)
        for split in ("oof", "test"):
            np.testing.assert_allclose(load_array(b.array_file(split)), load_array(a.array_file(split)), rtol=0, atol=1e-6, err_msg=f"{member.name} {split}")
        status = read_json(b.status_file)
        assert status["status"] == "done" and status["inputs"] == read_json(a.status_file)["inputs"]
        if not member.requires:
            assert status["folds_fitted_now"] == 0  # the gather reused every fold a Ray task fitted
    np.testing.assert_array_equal(load_array(par.folds_file("kfold")), load_array(seq.folds_file("kfold")))
    # the source was gathered before its reader started
    assert read_json(par.member("ft-logreg").status_file) and par.member("tiny-ft").status_file.stat().st_mtime_ns < par.member("ft-logreg").status_file.stat().st_mtime_ns

    # a rerun finds everything done: no fold and no member.json is rewritten
    markers = sorted((tmp_path / "ray" / "members").glob("*/fold_*/DONE")) + [par.member(m.name).status_file for m in config.members]
    stamps = [p.stat().st_mtime_ns for p in markers]
    fit_members_ray(config, splits.train, tmp_path / "ray", test=splits.test, num_workers=2)
    assert [p.stat().st_mtime_ns for p in markers] == stamps and len(markers) == 4 * 3 + 4


def _fake_embedding(texts):
    rows = [np.frombuffer((t * 8).encode()[:32].ljust(32, b"."), dtype=np.uint8).astype(np.float32) for t in texts]
    return np.stack(rows) / 255.0


def _cache_worker(root, texts, seed):
    cache = EmbeddingCache(root, shard_size=7)
    cache.small_shard_rows, cache.max_small_shards = 8, 3  # merge often: compactions race with writes
    rng = np.random.default_rng(seed)
    results = []
    for _ in range(6):
        chosen = [texts[i] for i in rng.choice(len(texts), size=15, replace=False)]
        results.append((chosen, cache.get_or_compute("fake", chosen, _fake_embedding)))
    return results


@pytest.mark.slow
def test_embedding_cache_shared_by_concurrent_ray_tasks(tmp_path, ray_session):
    texts = [f"tweet number {i} about things" for i in range(60)]
    remote = ray.remote(_cache_worker)
    outputs = ray.get([remote.remote(str(tmp_path / "cache"), texts, seed) for seed in range(4)])
    for results in outputs:
        for chosen, got in results:
            np.testing.assert_array_equal(got, _fake_embedding(chosen))
    # afterwards the folder holds no damaged shard and serves every text that was computed
    fresh = EmbeddingCache(tmp_path / "cache")
    seen = sorted({t for results in outputs for chosen, _ in results for t in chosen})
    np.testing.assert_array_equal(fresh.get_or_compute("fake", seen, lambda t: pytest.fail(f"recomputed {len(t)} texts")), _fake_embedding(seen))
    assert fresh.misses == 0 and fresh.hits == len(seen)


@pytest.mark.slow
def test_fit_cli_engine_ray(tmp_path, ray_session):
    from embedensemble.errors import ConfigError
    from embedensemble.fit import main

    data = write_kaggle(tmp_path / "data", n_train=60, n_test=10)
    config = EnsembleConfig(name="cli", members=[MemberConfig(name="tfidf-logreg", features="tfidf", head="logreg")], cv=CVConfig(n_folds=2),
                            cache_dir=str(tmp_path / "cache"))
    config.save(tmp_path / "config.json")
    common = ["--config", str(tmp_path / "config.json"), "--data", str(data)]
    assert main([*common, "--run", str(tmp_path / "ray"), "--engine", "ray", "--num-workers", "2"]) == 0
    assert main([*common, "--run", str(tmp_path / "seq")]) == 0
    oof = [load_array(RunFolder(tmp_path / r).member("tfidf-logreg").array_file("oof")) for r in ("ray", "seq")]
    np.testing.assert_array_equal(oof[0], oof[1])
    with pytest.raises(ConfigError, match="--engine ray only"):
        main([*common, "--run", str(tmp_path / "x"), "--num-workers", "2"])
