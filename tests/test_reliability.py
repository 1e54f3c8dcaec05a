"""Crashes, determinism and hostile inputs to predict (issue: reliability and safety)."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embedensemble import EnsembleConfig
from embedensemble.data import load_dataset
from embedensemble.errors import DataError
from embedensemble.fileio import load_array
from embedensemble.fitting import fit_members
from embedensemble.stacking import stack_run

from .synthetic import write_kaggle

CONFIG = {
    "name": "crash",
    "members": [
        {"name": "m1-logreg", "features": "tfidf", "head": "logreg"},
        {"name": "m2-lgbm", "features": "tfidf", "head": "lgbm", "head_params": {"n_estimators": 40, "num_leaves": 7}},
        {"name": "m3-ridge", "features": "tfidf", "head": "ridge"},
    ],
    "cv": {"n_folds": 3},
}


def _fit_cmd(config, data, run):
    return [sys.executable, "-m", "embedensemble.fit", "--config", str(config), "--data", str(data), "--run", str(run), "-q"]


def test_sigkill_mid_fit_then_rerun_recomputes_no_finished_member(tmp_path):
    data = write_kaggle(tmp_path / "data", n_train=300, n_test=30)
    config = tmp_path / "c.json"
    config.write_text(json.dumps(CONFIG))
    run = tmp_path / "run"
    first_status = run / "members" / "m1-logreg" / "member.json"
    proc = subprocess.Popen(_fit_cmd(config, data, run), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if first_status.is_file() and json.loads(first_status.read_text())["status"] == "done":
            break
        time.sleep(0.05)
    assert proc.poll() is None, "fit finished before it could be killed; enlarge the fixture"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "members" / "m3-ridge" / "member.json").is_file()
    before = first_status.read_bytes()
    subprocess.run(_fit_cmd(config, data, run), check=True, capture_output=True, timeout=600)
    assert first_status.read_bytes() == before  # the finished member was not recomputed
    clean = tmp_path / "clean"
    subprocess.run(_fit_cmd(config, data, clean), check=True, capture_output=True, timeout=600)
    for name in ("m1-logreg", "m2-lgbm", "m3-ridge"):
        np.testing.assert_array_equal(load_array(run / "members" / name / "oof.npy"), load_array(clean / "members" / name / "oof.npy"))
        np.testing.assert_array_equal(load_array(run / "members" / name / "test.npy"), load_array(clean / "members" / name / "test.npy"))


def test_same_data_config_seed_give_identical_probabilities(tmp_path):
    splits = load_dataset(write_kaggle(tmp_path / "data", n_train=150))
    config = EnsembleConfig.from_dict(CONFIG)
    probas = []
    for run in ("a", "b"):
        fit_members(config, splits.train, tmp_path / run, test=splits.test)
        ensemble = stack_run(tmp_path / run, write_report=False)
        probas.append(ensemble.predict_proba(splits.test.texts).to_numpy())
    np.testing.assert_array_equal(probas[0], probas[1])


def test_same_seed_identical_for_embedding_and_finetuned_members(tmp_path):
    """A frozen-encoder member, a fine-tuned member and a head on its fine-tuned embeddings (tiny random
    models), each run with its own empty embedding cache: OOF, eval and test probabilities are identical."""
    import torch
    from tiny_models import make_tiny_st_encoder

    from embedensemble.config import CVConfig, MemberConfig
    from embedensemble.run_folder import RunFolder

    from .synthetic import write_semeval

    encoder = str(make_tiny_st_encoder(tmp_path / "encoder"))
    splits = load_dataset(write_semeval(tmp_path / "data", n_train=40, n_dev=10, n_test=10, seed=3))
    ft_params = {"adapter": "none", "lr": 2e-3, "max_steps": 2, "batch_size": 8, "warmup_ratio": 0.0,
                 "save_every_steps": 1000, "predict_batch_size": 16}
    members = [
        MemberConfig(name="frozen-logreg", features=encoder, head="logreg"),
        MemberConfig(name="tiny-ft", kind="pooled-finetune", backbone=encoder, params=ft_params),
        MemberConfig(name="ft-logreg", features="finetuned:tiny-ft", head="logreg"),
    ]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        probas, runs = [], []
        for name in ("a", "b"):
            config = EnsembleConfig(name="det", members=members, cv=CVConfig(n_folds=2), cache_dir=str(tmp_path / f"cache-{name}"), device="cpu")
            fit_members(config, splits.train, tmp_path / name, test=splits.test, eval=splits.eval)
            ensemble = stack_run(tmp_path / name, write_report=False)
            probas.append(ensemble.predict_proba(splits.test.texts).to_numpy())
            runs.append(RunFolder(tmp_path / name))
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(probas[0], probas[1])
    for member in ("frozen-logreg", "tiny-ft", "ft-logreg"):
        for split in ("oof", "eval", "test"):
            np.testing.assert_array_equal(runs[0].member_array(member, split), runs[1].member_array(member, split), err_msg=f"{member} {split}")


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ens")
    splits = load_dataset(write_kaggle(tmp / "data", n_train=120))
    config = EnsembleConfig.from_dict({"name": "p", "members": [CONFIG["members"][0]], "cv": {"n_folds": 2}})
    fit_members(config, splits.train, tmp / "run")
    return stack_run(tmp / "run", write_report=False)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(min_size=1, max_size=300).filter(lambda s: s.strip()), max_size=8))
def test_predict_any_unicode_texts(ensemble, texts):
    out = ensemble.predict(texts)
    assert out.shape == (len(texts), 11)
    assert set(np.unique(out.to_numpy())) <= {0, 1}
    proba = ensemble.predict_proba(texts).to_numpy()
    assert np.all((proba >= 0) & (proba <= 1))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.integers(), st.none(), st.just(""), st.just("   "), st.floats(allow_nan=True)), min_size=1, max_size=4), st.data())
def test_predict_rejects_non_texts_naming_the_index(ensemble, bad_items, data):
    texts = ["fine tweet"] * data.draw(st.integers(0, 3))
    index = len(texts)
    with pytest.raises(DataError, match=f"row {index}"):
        ensemble.predict(texts + bad_items)


@given(st.text(max_size=50))
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_predict_single_string_is_one_row(ensemble, text):
    """One string is one tweet (issue 14): the same row as ``[text]``, or the same error."""
    if not text.strip():
        with pytest.raises(DataError, match="empty tweet"):
            ensemble.predict(text)
        return
    np.testing.assert_array_equal(ensemble.predict_proba(text).to_numpy(), ensemble.predict_proba([text]).to_numpy())
    assert ensemble.predict(text).shape == (1, 11)


def test_predict_empty_list(ensemble):
    assert ensemble.predict([]).shape == (0, 11)
    assert list(ensemble.predict_proba([]).columns)[-1] == "trust"


def test_predict_very_long_text_is_truncated_with_warning(ensemble, caplog):
    assert ensemble.predict(["happy " * 20_000]).shape == (1, 11)
    assert "truncated" in caplog.text


def test_predict_non_iterable(ensemble):
    with pytest.raises(DataError, match="expected a list of texts, got int"):
        ensemble.predict(42)
