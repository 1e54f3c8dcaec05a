"""The HTTP service's API (FastAPI TestClient over the tiny TF-IDF ensemble): answers, limits, failures."""

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient

from embedensemble import EMOTIONS, EmotionEnsemble
from embedensemble._cli import run_cli
from embedensemble.serve import __main__ as serve_cli
from embedensemble.serve import create_app

from .tiny_ensemble import shared_tiny_ensemble

TWEETS = ["so happy and delighted today with friends", "furious rage at the bus again", "scared and terrified", "the coffee"]


@pytest.fixture(scope="module")
def ensemble_dir(tmp_path_factory):
    return shared_tiny_ensemble(tmp_path_factory)


@pytest.fixture(scope="module")
def ensemble(ensemble_dir):
    return EmotionEnsemble.load(ensemble_dir, use_cache=False)


@pytest.fixture(scope="module")
def client(ensemble_dir):
    return TestClient(create_app(ensemble_dir, max_batch=5, max_chars=80))


def test_predict_returns_labels_and_probabilities_of_the_ensemble(client, ensemble):
    response = client.post("/predict", json={"texts": TWEETS})
    assert response.status_code == 200
    results = response.json()["results"]
    proba, decided = ensemble.predict_proba(TWEETS).to_numpy(), ensemble.predict(TWEETS).to_numpy()
    assert [r["text"] for r in results] == TWEETS
    for k, result in enumerate(results):
        assert list(result["probabilities"]) == list(EMOTIONS)
        np.testing.assert_allclose([result["probabilities"][e] for e in EMOTIONS], proba[k], atol=1e-6)
        assert result["labels"] == [e for j, e in enumerate(EMOTIONS) if decided[k, j]]
    assert "joy" in results[0]["labels"] and "anger" in results[1]["labels"]  # the fixture's cues are learnt
    assert response.json()["thresholds"] == pytest.approx(ensemble.thresholds)


def test_a_bare_list_and_an_empty_list_are_accepted(client):
    assert client.post("/predict", json=[TWEETS[0]]).json()["results"][0]["text"] == TWEETS[0]
    assert client.post("/predict", json=[]).json()["results"] == []


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"texts": ["a"] * 6}, 413, "6 texts in one request; the limit is 5"),
        ({"texts": ["ok", "x" * 81]}, 413, "texts[1] has 81 characters; the limit is 80"),
        ({"texts": ["ok", 3]}, 422, "texts[1] must be a string, got int"),
        ({"texts": ["ok", "   "]}, 422, "texts[1] is empty"),
        ({"texts": "one tweet"}, 422, '"texts" must be a list of strings, got str'),
        ({"text": ["a"]}, 422, 'exactly one key, "texts"'),
        (b"{not json", 400, "the body is not valid JSON"),
    ],
)
def test_bad_requests_get_4xx_with_a_clear_message(client, body, status, message):
    response = client.post("/predict", content=body) if isinstance(body, bytes) else client.post("/predict", json=body)
    assert response.status_code == status
    assert message in response.json()["detail"]


def test_an_oversized_body_is_refused_before_it_is_parsed(client):
    response = client.post("/predict", content=b"[" + b'"a",' * 100_000 + b'"a"]', headers={"content-type": "application/json"})
    assert response.status_code == 413 and "request body" in response.json()["detail"]


def test_a_failing_model_gets_500_and_the_next_request_is_served(ensemble_dir, monkeypatch):
    app = create_app(ensemble_dir)
    model = app.state.ensemble
    real = model.predict_proba
    calls = []

    def flaky(texts):
        calls.append(len(texts))
        if len(calls) == 1:
            raise RuntimeError("simulated out of memory")
        return real(texts)

    monkeypatch.setattr(model, "predict_proba", flaky)
    with TestClient(app) as client:
        first = client.post("/predict", json={"texts": TWEETS[:2]})
        assert first.status_code == 500
        assert "RuntimeError: simulated out of memory" in first.json()["detail"]
        second = client.post("/predict", json={"texts": TWEETS[:2]})
        assert second.status_code == 200 and len(second.json()["results"]) == 2
        assert client.get("/health").json()["status"] == "ok"
    assert calls == [2, 2]


def test_health_describes_the_ensemble(client, ensemble_dir):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["ensemble"] == str(ensemble_dir)
    assert health["members"] == ["tfidf-logreg"] and health["labels"] == list(EMOTIONS)
    assert health["limits"] == {"max_batch": 5, "max_chars": 80}


def test_the_page_is_served(client):
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert 'id="texts"' in response.text and 'id="predict"' in response.text


def test_an_in_memory_ensemble_can_be_served(ensemble):
    with TestClient(create_app(ensemble)) as client:
        assert client.post("/predict", json=["furious rage"]).json()["results"][0]["labels"] == ["anger"]
        assert client.get("/health").json()["ensemble"] is None


def test_serve_cli_reports_a_missing_ensemble_without_a_traceback(tmp_path, capsys):
    assert run_cli(serve_cli.main, ["--ensemble", str(tmp_path / "nothing"), "--port", "0"]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_the_http_benchmark_helper_serves_an_ensemble_in_a_child_process(ensemble_dir):
    """benchmarks.distill times POST /predict through this helper: it must start serve, answer, and stop it."""
    from benchmarks.distill import served

    with served(ensemble_dir, max_batch=8) as predict:
        one = predict(["so happy today"])
        both = predict(["so happy today", "this is awful"])
    assert [r["text"] for r in both["results"]] == ["so happy today", "this is awful"]
    assert one["results"][0] == both["results"][0]


def test_labels_follow_the_ensembles_decision_rule(ensemble_dir):
    from embedensemble.jaccard_decoding import decode_expected_jaccard

    decoding = EmotionEnsemble.load(ensemble_dir, use_cache=False)
    decoding.thresholds_.decision = "expected_jaccard"  # as an ensemble stacked for objective jaccard
    client = TestClient(create_app(decoding))
    results = client.post("/predict", json={"texts": TWEETS}).json()["results"]
    expected = decode_expected_jaccard(decoding.predict_proba(TWEETS).to_numpy())
    assert np.array_equal(decoding.predict(TWEETS).to_numpy(), expected)
    assert [r["labels"] for r in results] == [[e for j, e in enumerate(EMOTIONS) if row[j]] for row in expected]
    assert client.get("/health").json()["decision"] == "expected_jaccard"
