"""Data-parallel fine-tuning: 2 processes (gloo, CPU) follow the loss curve of one process with the same global batch."""

import json

import numpy as np
import pytest
import torch

from embedensemble.backbones import torch_threads
from embedensemble.backbones.tokens import TextFormat
from embedensemble.finetune.args import FinetuneArgs
from embedensemble.finetune.classifiers import PooledClassifier
from embedensemble.finetune.parallel import DataParallel, current, run_processes
from embedensemble.finetune.training import TokenizedData, train
from embedensemble.labels import N_LABELS

VOCAB, HIDDEN = 40, 16


def _data(n=37, seed=0):
    rng = np.random.default_rng(seed)
    ids = [[1, *rng.integers(3, VOCAB, size=int(rng.integers(3, 12))).tolist(), 2] for _ in range(n)]
    labels = np.zeros((n, N_LABELS), dtype=np.float32)
    for i, row in enumerate(ids):  # labels a tiny model can learn: which token ranges a text holds
        labels[i, [t % N_LABELS for t in row[1:4]]] = 1.0
    return TokenizedData(ids, labels)


def _model():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,  # no dropout: masks would differ by process
    )
    return PooledClassifier(BertModel(config), HIDDEN, "mean")


def _fit(parallel, out_file, params):
    model = _model()
    args = FinetuneArgs.from_params({"adapter": "none", "lr": 5e-3, "warmup_ratio": 0.0, **params}, kind="pooled-finetune")
    stats = train(model, _data(), TextFormat(max_length=16), args, seed=7, device=torch.device("cpu"), parallel=parallel)
    if parallel is None or parallel.is_main:
        weights = {k: v.detach().numpy().ravel().tolist() for k, v in model.state_dict().items()}
        with open(out_file, "w") as f:
            json.dump({"loss": [r["loss"] for r in stats["history"]], "weights": weights, "examples": stats["examples"]}, f)


@pytest.mark.slow  # two spawned processes import torch + transformers: ~25 s each on a busy CPU
@pytest.mark.parametrize(
    "params",
    [
        {"batch_size": 8, "max_steps": 12},  # 37 rows: the epoch's last batch is odd-sized
        {"batch_size": 3, "grad_accum": 3, "max_steps": 8, "max_grad_norm": 0.5},  # accumulation, clipping
    ],
)
def test_two_processes_follow_the_single_process_loss_curve(tmp_path, params):
    with torch_threads(1):  # as each rank runs
        _fit(None, tmp_path / "one.json", params)
    run_processes(_fit, 2, tmp_path / "two.json", params)  # rendezvous on a port that is free now
    one, two = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert len(one["loss"]) == len(two["loss"]) == params["max_steps"]
    np.testing.assert_allclose(two["loss"], one["loss"], rtol=1e-5, atol=1e-6)
    assert one["loss"][-1] < one["loss"][0]  # it learned something: the curves compared are not flat
    for name, values in one["weights"].items():
        np.testing.assert_allclose(two["weights"][name], values, rtol=1e-4, atol=1e-5, err_msg=name)
    assert two["examples"] < one["examples"]  # rank 0 saw only its share of the rows


def test_rows_split_without_overlap_and_small_batches_still_sync():
    rows = np.arange(7)
    parts = [DataParallel(r, 3).local_rows(rows) for r in range(3)]
    assert sorted(np.concatenate([p for p, _ in parts]).tolist()) == rows.tolist()
    assert sum(n for _, n in parts) == 7
    mine, counted = DataParallel(2, 3).local_rows(np.arange(2))
    assert counted == 0 and len(mine) == 1  # runs one row at weight 0 so the gradient exchange happens
    assert current() is None  # no process group here: single-process training
    with pytest.raises(ValueError):
        DataParallel(2, 2)


@pytest.mark.slow
def test_torchrun_fit_trains_each_fold_on_two_ranks(tmp_path):
    """``torchrun -m embedensemble.fit``: rank 0 writes the run, each rank trained on half of every batch."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from embedensemble.fileio import read_json
    from tests.synthetic import write_kaggle
    from tests.tiny_models import make_tiny_st_encoder

    encoder = make_tiny_st_encoder(tmp_path / "encoder")
    data = write_kaggle(tmp_path / "data", n_train=60, n_test=10)
    params = {"adapter": "none", "lr": 2e-3, "max_steps": 4, "batch_size": 8, "warmup_ratio": 0.0, "predict_batch_size": 16}
    config = {"name": "ddp", "members": [{"name": "tiny-ft", "kind": "pooled-finetune", "backbone": str(encoder), "params": params}],
              "cv": {"n_folds": 2}, "cache_dir": str(tmp_path / "cache")}
    (tmp_path / "config.json").write_text(json.dumps(config))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "embedensemble.fit",
               "--config", str(tmp_path / "config.json"), "--data", str(data), "--run-dir", str(tmp_path / "run")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=600, cwd=Path(__file__).resolve().parents[1], env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert read_json(tmp_path / "run" / "members" / "tiny-ft" / "member.json")["status"] == "done"
    assert (tmp_path / "run.ddp-rank1" / "members" / "tiny-ft" / "oof.npy").is_file()
    for k in (0, 1):
        stats = read_json(tmp_path / "run" / "members" / "tiny-ft" / f"fold_{k}" / "finetune.json")["train_stats"]
        assert stats["steps"] == 4 and stats["examples"] == 15  # batches 8, 8, 8, 6 of 30 rows: rank 0 took 4 + 4 + 4 + 3
