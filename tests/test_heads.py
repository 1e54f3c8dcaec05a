"""Heads: learning, output contract, save/load without pickle, one-class labels, errors, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.metrics import f1_score

from embedensemble.errors import ArtifactError, ConfigError
from embedensemble.heads import LGBMHead, LogRegHead, available_heads, load_head, make_head

N_LABELS = 11
# Small, fast settings: the defaults are sized for real data, tests only check behaviour.
FAST = {"logreg": {}, "ridge": {}, "lgbm": {"n_estimators": 60, "learning_rate": 0.2, "n_jobs": 1, "min_child_samples": 5}}
HEADS = sorted(FAST)


def separable(n: int = 500, d: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian features; label j is the half-space ``x[2j] + x[2j+1] > 0.7`` (learnable by lines and trees)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    Y = np.stack([X[:, 2 * j] + X[:, 2 * j + 1] > 0.7 for j in range(N_LABELS)], axis=1).astype(np.int8)
    return X, Y


@pytest.fixture(scope="module")
def data():
    X, Y = separable(600)
    return X[:450], Y[:450], X[450:], Y[450:]


@pytest.fixture(scope="module")
def fitted(data):
    Xtr, Ytr, _, _ = data
    return {name: make_head(name, random_state=0, **FAST[name]).fit(Xtr, Ytr) for name in HEADS}


def test_registry_lists_the_heads():
    assert set(HEADS) <= set(available_heads())


@pytest.mark.parametrize("name", HEADS)
def test_head_learns_a_separable_problem(name, data, fitted):
    _, _, Xte, Yte = data
    proba = fitted[name].predict_proba(Xte)
    macro = f1_score(Yte, proba >= 0.5, average="macro", zero_division=0)
    # Each label has ~31% positives: predicting all-positive scores ~0.47 macro-F1, coin flips ~0.38.
    assert macro > 0.75, f"{name}: macro-F1 {macro:.3f}"


@pytest.mark.parametrize("name", HEADS)
def test_predict_proba_contract(name, data, fitted):
    _, _, Xte, _ = data
    proba = fitted[name].predict_proba(Xte)
    assert proba.shape == (len(Xte), N_LABELS)
    assert proba.dtype == np.float32
    assert np.all((proba >= 0) & (proba <= 1))
    assert fitted[name].predict_proba(Xte[:0]).shape == (0, N_LABELS)


@pytest.mark.parametrize("name", HEADS)
def test_save_load_round_trip_is_exact_and_pickle_free(name, data, fitted, tmp_path):
    _, _, Xte, _ = data
    head = fitted[name]
    head.save(tmp_path / name)
    files = {p.suffix for p in (tmp_path / name).iterdir()}
    assert files <= {".json", ".safetensors", ".txt"}, files
    reloaded = load_head(tmp_path / name)
    assert type(reloaded) is type(head)
    assert reloaded.get_params() == head.get_params()
    np.testing.assert_array_equal(reloaded.predict_proba(Xte), head.predict_proba(Xte))
    # Loading through the concrete class works too; through the wrong one does not.
    assert type(type(head).load(tmp_path / name)) is type(head)
    other = LogRegHead if not isinstance(head, LogRegHead) else LGBMHead
    with pytest.raises(ArtifactError):
        other.load(tmp_path / name)


@pytest.mark.parametrize("name", HEADS)
def test_one_class_labels_predict_their_prior(name, data, tmp_path):
    Xtr, Ytr, Xte, _ = data
    Y = Ytr.copy()
    Y[:, 9] = 0  # e.g. no 'surprise' in this fold
    Y[:, 3] = 1
    head = make_head(name, random_state=0, **FAST[name]).fit(Xtr, Y)
    proba = head.predict_proba(Xte)
    assert np.allclose(proba[:, 9], 0.5 / (len(Xtr) + 1))
    assert np.allclose(proba[:, 3], (len(Xtr) + 0.5) / (len(Xtr) + 1))
    assert proba[:, 0].std() > 0.05  # the other labels still got real models
    head.save(tmp_path)
    np.testing.assert_array_equal(load_head(tmp_path).predict_proba(Xte), proba)


def test_all_labels_constant_still_predicts(data):
    Xtr, _, Xte, _ = data
    for name in HEADS:
        head = make_head(name, random_state=0, **FAST[name]).fit(Xtr, np.zeros((len(Xtr), N_LABELS), dtype=int))
        assert np.allclose(head.predict_proba(Xte), 0.5 / (len(Xtr) + 1))


def test_unknown_head_names_itself():
    with pytest.raises(ConfigError, match="'mlp'"):
        make_head("mlp")


@pytest.mark.parametrize("name", HEADS)
def test_unknown_param_names_itself_and_the_head(name):
    with pytest.raises(ConfigError, match=rf"'{name}'.*bogus_param"):
        make_head(name, bogus_param=3)


@pytest.mark.parametrize(
    "name, params, culprit",
    [
        ("logreg", {"C": -1}, "C"),
        ("logreg", {"class_weight": "heavy"}, "class_weight"),
        ("logreg", {"solver": "adam"}, "solver"),
        ("ridge", {"alpha": 0}, "alpha"),
        ("lgbm", {"feature_fraction": 1.5}, "feature_fraction"),
        ("lgbm", {"n_estimators": 2.5}, "n_estimators"),
        ("lgbm", {"random_state": "seed"}, "random_state"),
    ],
)
def test_bad_param_values_name_the_param(name, params, culprit):
    with pytest.raises(ConfigError, match=culprit):
        make_head(name, **params)


@pytest.mark.parametrize("name", HEADS)
def test_sparse_input_matches_dense(name, data):
    Xtr, Ytr, Xte, _ = data
    Xtr_s, Xte_s = sp.csr_matrix(np.where(Xtr > 0.8, Xtr, 0)), sp.csr_matrix(np.where(Xte > 0.8, Xte, 0))
    head = make_head(name, random_state=0, **FAST[name]).fit(Xtr_s, Ytr)
    sparse_proba = head.predict_proba(Xte_s)
    assert sparse_proba.shape == (len(Xte), N_LABELS)
    np.testing.assert_allclose(sparse_proba, head.predict_proba(Xte_s.toarray()), atol=1e-5)


@pytest.mark.parametrize("name", HEADS)
def test_two_fits_with_one_seed_are_identical(name, data, fitted):
    Xtr, Ytr, Xte, _ = data
    again = make_head(name, random_state=0, **FAST[name]).fit(Xtr, Ytr)
    np.testing.assert_array_equal(again.predict_proba(Xte), fitted[name].predict_proba(Xte))


def test_lgbm_seed_matters_when_subsampling(data):
    Xtr, Ytr, Xte, _ = data
    params = {**FAST["lgbm"], "feature_fraction": 0.3}
    a = make_head("lgbm", random_state=0, **params).fit(Xtr, Ytr).predict_proba(Xte)
    b = make_head("lgbm", random_state=1, **params).fit(Xtr, Ytr).predict_proba(Xte)
    assert not np.array_equal(a, b)


def test_input_errors(data, fitted):
    Xtr, Ytr, Xte, _ = data
    with pytest.raises(ValueError, match="0/1"):
        make_head("ridge").fit(Xtr, Ytr * 2)
    with pytest.raises(ValueError, match="shape"):
        make_head("ridge").fit(Xtr, Ytr[:10])
    with pytest.raises(ValueError, match="24 features"):
        fitted["logreg"].predict_proba(Xte[:, :5])
    with pytest.raises(RuntimeError, match="not fitted"):
        make_head("logreg").predict_proba(Xte)


def test_load_refuses_a_folder_without_head_json(tmp_path):
    with pytest.raises(ArtifactError, match="head.json"):
        load_head(tmp_path)


def test_standardized_logreg_is_scaler_plus_logreg_in_one_linear_model(data, tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    Xtr, Ytr, Xte, _ = data
    # dimensions whose scales differ by orders of magnitude, as a decoder's hidden states do
    spread = np.logspace(-2, 3, Xtr.shape[1]).astype(np.float32)
    Xtr, Xte = Xtr * spread + 5.0, Xte * spread + 5.0
    head = make_head("logreg", C=0.05, standardize=True).fit(Xtr, Ytr)
    scaler = StandardScaler().fit(Xtr)
    expected = np.stack(
        [LogisticRegression(C=0.05, solver="newton-cg").fit(scaler.transform(Xtr), Ytr[:, j]).predict_proba(scaler.transform(Xte))[:, 1]
         for j in range(N_LABELS)],
        axis=1,
    )
    np.testing.assert_allclose(head.predict_proba(Xte), expected, atol=1e-4)
    plain = make_head("logreg", C=0.05).fit(Xtr, Ytr).predict_proba(Xte)
    assert np.abs(plain - expected).max() > 0.05  # without it the large dimensions dominate the penalty
    head.save(tmp_path / "h")
    np.testing.assert_array_equal(load_head(tmp_path / "h").predict_proba(Xte), head.predict_proba(Xte))
    with pytest.raises(ConfigError, match="dense"):
        make_head("logreg", standardize=True).fit(sp.csr_matrix(Xtr), Ytr)
    with pytest.raises(ConfigError, match="standardize"):
        make_head("logreg", standardize="yes").fit(Xtr, Ytr)
