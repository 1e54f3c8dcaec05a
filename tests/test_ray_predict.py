"""Batch prediction on Ray Data: shards equal in-process predictions, resume redoes only missing shards.

Shard planning tests need no Ray; the Ray tests share one local Ray instance (2 CPUs) and a tiny
TF-IDF ensemble fitted on synthetic tweets.
"""

import csv
import json
import os

import numpy as np
import pandas as pd
import pytest

from embedensemble.config import CVConfig, EnsembleConfig, MemberConfig
from embedensemble.distributed.shards import plan_shards, read_shard
from embedensemble.errors import ArtifactError, DataError
from embedensemble.labels import EMOTIONS
from embedensemble.text_io import iter_text_chunks

from .synthetic import make_tweets


def _tricky_rows(n):
    texts, _ = make_tweets(n, seed=3)
    # quoted newlines, commas and doubled quotes inside fields must not cut a shard
    return [(f"id{i}", f'{t}, "quoted"\nsecond line' if i % 7 == 0 else t) for i, t in enumerate(texts)]


def _write_inputs(folder, rows):
    folder.mkdir(parents=True, exist_ok=True)
    third = len(rows) // 3
    with open(folder / "a.csv", "w", newline="", encoding="utf-8-sig") as f:  # BOM, blank lines at the end
        writer = csv.writer(f)
        writer.writerow(["ID", "Tweet"])
        writer.writerows(rows[:third])
        f.write("\r\n\n")
    with open(folder / "b.jsonl", "w", encoding="utf-8") as f:  # a blank line inside, no final newline
        lines = [json.dumps({"ID": i, "Tweet": t}) for i, t in rows[third : 2 * third]]
        f.write("\n".join(lines[:5] + ["  "] + lines[5:]))
    pd.DataFrame(rows[2 * third :], columns=["ID", "Tweet"]).to_parquet(folder / "c.parquet", row_group_size=7)
    return folder


@pytest.mark.parametrize("rows_per_shard", [1, 4, 10, 1000])
def test_shards_read_back_exactly_what_text_io_reads(tmp_path, rows_per_shard):
    folder = _write_inputs(tmp_path / "in", _tricky_rows(60))
    for name in ("a.csv", "b.jsonl", "c.parquet"):
        shards = plan_shards(folder / name, rows_per_shard)
        texts, ids, first_rows = [], [], []
        for shard in shards:
            t, i = read_shard(shard, text_column="Tweet", id_column=None)
            texts += t
            ids += i
            first_rows.append(shard.first_row)
        (expected,) = list(iter_text_chunks(folder / name, chunk_size=10_000))
        assert texts == expected.texts and ids == expected.ids, name
        assert first_rows == list(range(1, len(texts) + 1, rows_per_shard))
        assert all(s.n_rows <= rows_per_shard for s in shards)
    names = [s.name for s in plan_shards(folder, 10)]
    assert names == sorted(names) and len(set(names)) == len(names) and names[0] == "part-00000-000000"


def test_bad_row_in_a_shard_names_file_and_row(tmp_path):
    rows = _tricky_rows(12)
    rows[9] = ("id9", "   ")
    folder = _write_inputs(tmp_path / "in", rows)
    shard = next(s for s in plan_shards(folder / "c.parquet", 2) if s.first_row <= 2 <= s.first_row + s.n_rows - 1)
    with pytest.raises(DataError, match=r"c\.parquet, row 2, column 'Tweet': empty tweet"):
        read_shard(shard, text_column="Tweet", id_column=None)


# ---------------------------------------------------------------------------------------- on Ray


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny_ensemble(tmp_path_factory):
    from embedensemble.training import fit_ensemble

    root = tmp_path_factory.mktemp("ens")
    texts, labels = make_tweets(150)
    config = EnsembleConfig(
        name="tiny", members=[MemberConfig(name="tfidf-logreg", features="tfidf", head="logreg")], cv=CVConfig(n_folds=3), cache_dir=str(root / "cache")
    )
    ensemble = fit_ensemble(config, texts, labels, run_dir=root / "run")
    return ensemble, ensemble.save(root / "ensemble")


def _read_output(folder):
    parts = sorted(folder.glob("part-*.parquet"))
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)


@pytest.mark.slow
def test_ray_prediction_equals_in_process_and_resumes(tmp_path, ray_session, tiny_ensemble):
    from embedensemble.distributed.ray_predict import predict_with_ray, shard_paths

    ensemble, saved = tiny_ensemble
    rows = _tricky_rows(90)
    folder = _write_inputs(tmp_path / "in", rows)
    out = tmp_path / "out"
    result = predict_with_ray(saved, folder, out, proba=True, num_workers=2, rows_per_shard=8, batch_size=3)
    assert result.shards_total == len(result.shards_written) == 12 and not result.shards_skipped
    assert len({s["pid"] for s in result.shard_stats}) == 2  # both actors worked
    got = _read_output(out)
    expected = ensemble.predict_proba([t for _, t in rows])
    assert list(got.columns) == ["ID", *EMOTIONS]
    assert got["ID"].tolist() == [i for i, _ in rows]
    np.testing.assert_allclose(got[list(EMOTIONS)].to_numpy(), expected.to_numpy(), rtol=0, atol=1e-7)

    # A crash lost one shard's output (and one shard whose marker was never written): only those are redone.
    lost, unmarked = result.shards_written[3], result.shards_written[7]
    os.remove(shard_paths(out, lost)[0])
    os.remove(shard_paths(out, unmarked)[1])
    (out / f".{lost}.parquet.x1y2.tmp").write_bytes(b"half a file")  # what a killed writer leaves
    kept = {name: shard_paths(out, name)[1].stat().st_mtime_ns for name in result.shards_written if name not in (lost, unmarked)}
    again = predict_with_ray(saved, folder, out, proba=True, num_workers=2, rows_per_shard=8, batch_size=3)
    assert sorted(again.shards_written) == sorted([lost, unmarked]) and len(again.shards_skipped) == 10
    assert {name: shard_paths(out, name)[1].stat().st_mtime_ns for name in kept} == kept
    pd.testing.assert_frame_equal(_read_output(out), got)
    assert not list(out.glob(".*.tmp"))

    # Other options on the same folder are refused before any work; --no-resume starts afresh.
    with pytest.raises(ArtifactError, match="different options"):
        predict_with_ray(saved, folder, out, proba=False, rows_per_shard=8)
    fresh = predict_with_ray(saved, folder, out, proba=False, rows_per_shard=8, resume=False, num_workers=1)
    assert len(fresh.shards_written) == 12
    np.testing.assert_array_equal(_read_output(out)[list(EMOTIONS)].to_numpy(), ensemble.predict([t for _, t in rows]).to_numpy())


@pytest.mark.slow
def test_ray_cli_and_bad_rows(tmp_path, ray_session, tiny_ensemble):
    from embedensemble.predict import main

    ensemble, saved = tiny_ensemble
    texts, _ = make_tweets(30, seed=5)
    pd.DataFrame({"Tweet": texts}).to_parquet(tmp_path / "plain.parquet")
    assert main(["--ensemble", str(saved), "--input", str(tmp_path / "plain.parquet"), "--output", str(tmp_path / "o"), "--engine", "ray"]) == 0
    got = _read_output(tmp_path / "o")
    assert list(got.columns) == list(EMOTIONS)  # no ID column in, none out
    np.testing.assert_array_equal(got.to_numpy(), ensemble.predict(texts).to_numpy())
    assert json.loads((tmp_path / "o" / "_SUCCESS.json").read_text())["rows"] == 30

    texts[17] = ""
    pd.DataFrame({"Tweet": texts}).to_csv(tmp_path / "bad.csv", index=False)
    from embedensemble.distributed.ray_predict import predict_with_ray

    with pytest.raises(DataError, match=r"bad\.csv, row 18, column 'Tweet'"):
        predict_with_ray(saved, tmp_path / "bad.csv", tmp_path / "o2", rows_per_shard=10, num_workers=1)


def test_foreign_output_folder_is_refused(tmp_path, tiny_ensemble):
    pytest.importorskip("ray")
    from embedensemble.distributed.ray_predict import predict_with_ray

    _, saved = tiny_ensemble
    folder = _write_inputs(tmp_path / "in", _tricky_rows(9))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(ArtifactError, match="not empty"):
        predict_with_ray(saved, folder, tmp_path / "out")


def test_worker_count_fits_the_cluster():
    from embedensemble.distributed.ray_predict import _worker_count
    from embedensemble.errors import ConfigError

    assert _worker_count({"CPU": 2.0}, None, 1, 0, pending=10) == 2
    assert _worker_count({"CPU": 2.0}, 4, 1, 0, pending=10) == 2  # actors that cannot be placed are not started
    assert _worker_count({"CPU": 8.0}, None, 1, 0, pending=3) == 3  # no idle actors: one per pending shard at most
    assert _worker_count({"CPU": 8.0, "GPU": 2.0}, None, 1, 0.5, pending=10) == 4
    with pytest.raises(ConfigError, match="GPU"):
        _worker_count({"CPU": 8.0}, None, 1, 1, pending=10)
