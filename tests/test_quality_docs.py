"""benchmarks.quality's selection rule, and docs/quality.md / int8.md / bf16.md are what their results JSON renders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks import bf16, int8, quality, quality_candidates, quality_doc

ROOT = Path(__file__).resolve().parents[1]


class FakeScorer:
    """Macro-F1 of a member set = sum of fixed member values, per meta seed (plus a per-seed wobble)."""

    def __init__(self, values: dict[str, float], wobble: tuple[float, ...] = (0.0, 0.001, -0.001)) -> None:
        self.values, self.wobble = values, wobble

    def stack(self, members: list[str], stacker: str = "logreg", objective: str = "macro_f1", decision: str = "auto") -> list[dict[str, float]]:
        score = 0.5 + sum(self.values[m] for m in members)
        return [{"macro_f1": score + w, "micro_f1": score, "jaccard": score} for w in self.wobble]


def test_backward_elimination_drops_only_members_that_cost_more_than_the_rule_allows() -> None:
    scorer = FakeScorer({"strong": 0.05, "useful": 0.01, "harmful": -0.006, "useless": -0.001})
    kept, steps = quality.backward_elimination(scorer, ["strong", "useful", "harmful", "useless"])
    assert kept == ["strong", "useful", "useless"]  # dropping 'useless' gains 0.001 < 0.003: kept
    assert [s["dropped"] for s in steps] == ["harmful", None]


def test_a_gain_that_fails_in_one_meta_seed_does_not_pass() -> None:
    assert quality._passes([0.004, 0.004, 0.004])
    assert not quality._passes([0.009, 0.004, -0.0001])
    assert not quality._passes([0.002, 0.002, 0.002])


def test_additions_are_gains_of_each_member_added_alone_to_the_default_stack() -> None:
    scorer = FakeScorer({"a": 0.01, "b": 0.02, "fine-tune": 0.03, "noise": -0.002})
    scorer.names = ["a", "b", "fine-tune", "noise"]
    result = quality.additions(scorer, ["a", "b"])
    assert result["rows"]["fine-tune"]["gains"] == [0.03, 0.03, 0.03]
    assert result["rows"]["noise"]["gains"] == [-0.002] * 3
    assert result["rows"]["all additions"]["gains"] == [0.028] * 3
    assert set(result["rows"]) == {"fine-tune", "noise", "all additions"}
    table = "\n".join(quality_doc._additions_table({"additions": result, "cost": {"member_fit_seconds": {"fine-tune": 90.0},
                                                                                "member_tweets_per_s": {"fine-tune": 12.5}}}))
    assert "| fine-tune | 0.5600 | +0.0300 ± 0.0000 | 1.5 | 12.5 |" in table


def test_fit_cost_reads_gnu_time_output(tmp_path) -> None:
    report = tmp_path / "time.txt"
    report.write_text("\tElapsed (wall clock) time (h:mm:ss or m:ss): 1:12:30\n\tMaximum resident set size (kbytes): 4194304\n")
    assert quality._fit_cost(report) == {"cold_fit_minutes": 72.5, "peak_rss_gb": 4.0}


@pytest.mark.parametrize(
    ("module", "doc", "result"),
    [(quality, "quality.md", "quality_config.json"), (int8, "int8.md", "int8.json"), (bf16, "bf16.md", "bf16.json")],
)
def test_doc_equals_what_the_json_renders(module, doc, result) -> None:
    path = ROOT / "benchmarks" / "results" / result
    if not path.is_file():
        pytest.fail(f"{path} is missing: run python -m benchmarks.{module.__name__.split('.')[-1]}")
    assert (ROOT / "docs" / doc).read_text(encoding="utf-8") == module.render(json.loads(path.read_text(encoding="utf-8")))


def test_dev_check_scores_the_stack_on_dev_for_each_objective_and_renders(tmp_path) -> None:
    from synthetic import write_kaggle, write_semeval

    from embedensemble import EnsembleConfig
    from embedensemble.config import CVConfig, MemberConfig
    from embedensemble.data import load_dataset
    from embedensemble.fileio import read_json
    from embedensemble.metrics import evaluate
    from embedensemble.stacking import stack_and_print
    from embedensemble.training import fit_ensemble

    config = EnsembleConfig(name="dev-check", members=[MemberConfig(name="tfidf-logreg", features="tfidf", head="logreg")],
                            cv=CVConfig(n_folds=3))
    splits = load_dataset(write_semeval(tmp_path / "d", n_train=120, n_dev=50, n_test=10))
    ensemble = fit_ensemble(config, splits.train, run_dir=tmp_path / "run", eval=splits.eval, test=splits.test)

    dev = quality.dev_check(tmp_path / "run")
    assert dev["n_eval"] == len(splits.eval)
    # The macro-F1 stack is the fitted ensemble, scored on dev as the stack CLI scores it.
    expected = evaluate(splits.eval.labels, ensemble.predict(splits.eval.texts).to_numpy())
    assert dev["macro_f1"]["stack"] == quality.nested_scores_row(expected)
    assert dev["macro_f1"]["stack"]["macro_f1"] == round(read_json(tmp_path / "run" / "metrics.json")["stack"]["eval"]["macro_f1"], 4)
    assert set(dev["jaccard_decoding"]["members"]) == {"tfidf-logreg"}
    # The two Jaccard rules: thresholds as the stack CLI's --decision thresholds, decoding as its default.
    for key, decision in (("jaccard_thresholds", "thresholds"), ("jaccard_decoding", "expected_jaccard")):
        stack_and_print(tmp_path / "run", "jaccard", None, False, decision)
        scored = read_json(tmp_path / "run" / "metrics.json")["stack"]["eval"]
        assert dev[key]["stack"] == quality.nested_scores_row(scored)
        assert read_json(tmp_path / "run" / "thresholds.json")["params"]["decision"] == decision
    lines = "\n".join(quality_doc._dev_lines(dev))
    assert "| stack, thresholds for Jaccard |" in lines and f"{dev['jaccard_thresholds']['stack']['jaccard']:.4f}" in lines
    assert "| stack, expected-Jaccard decoding |" in lines

    kaggle = load_dataset(write_kaggle(tmp_path / "k", n_train=90, n_test=10))  # no labelled dev split
    fit_ensemble(config, kaggle.train, run_dir=tmp_path / "no-dev", test=kaggle.test)
    with pytest.raises(SystemExit, match="no labelled eval split"):
        quality.dev_check(tmp_path / "no-dev")


def test_candidates_are_each_added_alone_to_the_kept_stack_and_rendered(tmp_path) -> None:
    from synthetic import write_kaggle

    from embedensemble import EnsembleConfig
    from embedensemble.config import CVConfig, MemberConfig
    from embedensemble.data import load_dataset
    from embedensemble.training import fit_ensemble

    members = [MemberConfig(name="tfidf-logreg", features="tfidf", head="logreg"),
               MemberConfig(name="tfidf-ridge", features="tfidf", head="ridge", params={"normalise": True})]
    splits = load_dataset(write_kaggle(tmp_path / "k", n_train=150, n_test=10))
    fit_ensemble(EnsembleConfig(name="cand", members=members, cv=CVConfig(n_folds=3)), splits.train, run_dir=tmp_path / "run")

    found = quality_candidates.candidates(tmp_path / "run", [0, 1], None, ["tfidf-logreg"])
    scorer = quality.Scorer(tmp_path / "run", [0, 1], None)
    row = found["rows"]["tfidf-ridge"]
    assert set(found["rows"]) == {"tfidf-ridge"} and row["what"] == "head: tfidf + ridge, normalised tweets"
    assert row["macro_f1_gains"] == [round(g, 4) for g in quality._gains(scorer.stack(["tfidf-logreg", "tfidf-ridge"]),
                                                                           scorer.stack(["tfidf-logreg"]))]
    assert row["gain_rule"] == quality._passes(row["macro_f1_gains"]) and row["fit_minutes"] is not None
    lines = "\n".join(quality_doc._candidates_table(quality_candidates.apply_time_budget(found, None), 0.003))
    assert f"| tfidf-ridge | head: tfidf + ridge, normalised tweets | {row['alone']['macro_f1']:.4f} |" in lines
    with pytest.raises(SystemExit, match="lacks the kept members"):
        quality_candidates.candidates(tmp_path / "run", [0], None, ["mpnet-ft-top3"])


def test_a_candidate_that_refits_a_kept_member_with_another_seed_is_scored_in_its_place(tmp_path) -> None:
    from synthetic import write_kaggle

    from embedensemble import EnsembleConfig
    from embedensemble.config import CVConfig, MemberConfig
    from embedensemble.data import load_dataset
    from embedensemble.training import fit_ensemble

    members = [MemberConfig(name="tfidf-logreg", features="tfidf", head="logreg"),
               MemberConfig(name="tfidf-lgbm", features="tfidf", head="lgbm", head_params={"n_estimators": 20}),
               MemberConfig(name="tfidf-lgbm-s2", features="tfidf", head="lgbm", head_params={"n_estimators": 20})]  # a head takes no seed
    splits = load_dataset(write_kaggle(tmp_path / "k", n_train=150, n_test=10))
    fit_ensemble(EnsembleConfig(name="cand", members=members, cv=CVConfig(n_folds=3)), splits.train, run_dir=tmp_path / "run")

    kept = ["tfidf-logreg", "tfidf-lgbm"]
    found = quality_candidates.candidates(tmp_path / "run", [0, 1], None, kept)
    scorer = quality.Scorer(tmp_path / "run", [0, 1], None)
    refit = found["rows"]["tfidf-lgbm-s2"]["refit_of"]
    alone = scorer.stack(["tfidf-logreg"])
    assert refit == {"member": "tfidf-lgbm",
                     "member_gains": [round(g, 4) for g in quality._gains(scorer.stack(kept), alone)],
                     "refit_gains": [round(g, 4) for g in quality._gains(scorer.stack(["tfidf-logreg", "tfidf-lgbm-s2"]), alone)]}
    configs = {"top6": {"name": "top6", "kind": "pooled-finetune", "params": {"train_top_layers": 6}}, "top6-s7": {"name": "top6-s7", "kind": "pooled-finetune", "params": {"train_top_layers": 6, "seed": 7}},
               "top3-s7": {"name": "top3-s7", "kind": "pooled-finetune", "params": {"train_top_layers": 3, "seed": 7}}}
    assert quality_candidates.refit_twin(configs, ["top6"], "top6-s7") == "top6" and quality_candidates.refit_twin(configs, ["top6"], "top3-s7") is None
    swap = found["rows"]["tfidf-lgbm-s2"]["in_place_of"]
    assert swap["member"] == "tfidf-lgbm" and swap["member_fit_minutes"] is not None
    assert swap["macro_f1_gains"] == [round(g, 4) for g in quality._gains(scorer.stack(["tfidf-logreg", "tfidf-lgbm-s2"]), scorer.stack(kept))]
    text = "\n".join(quality_doc._candidates_table(quality_candidates.apply_time_budget(found, None), 0.003))
    assert "- tfidf-lgbm: " in text and "its refit tfidf-lgbm-s2: " in text


def test_a_candidate_varies_the_kept_member_of_its_kind_and_source_with_the_fewest_other_params() -> None:
    def finetune(name: str, **params) -> dict:
        return {"name": name, "kind": "pooled-finetune", "backbone": "mpnet", "params": params}

    configs = {c["name"]: c for c in [
        finetune("top3", train_top_layers=3), finetune("top6", train_top_layers=6), finetune("minilm-ft") | {"backbone": "minilm"},
        finetune("top6-pw", train_top_layers=6, pos_weight="auto"), finetune("top3-pw", train_top_layers=3, pos_weight="auto", seed=7),
        {"name": "tfidf-logreg", "kind": "head", "features": "tfidf", "head": "logreg"},
        {"name": "minilm-logreg", "kind": "head", "features": "minilm", "head": "logreg"}]}
    kept = ["tfidf-logreg", "top3", "minilm-ft", "top6"]
    assert [quality_candidates.variant_of(configs, kept, n) for n in ("top6-pw", "top3-pw", "minilm-logreg")] == ["top6", "top3", None]
    assert quality_candidates.variant_of(configs, ["top3", "top6"], "top6-pw") == "top6"
    # one param differs from each; a change of depth weighs more than a change of training options
    assert quality_candidates.variant_of(configs, ["top3", "top6-pw"], "top6") == "top6-pw"
    assert quality_candidates.variant_of(configs, ["top6-pw", "top3"], "top3-pw") == "top3"


def test_a_candidate_in_a_kept_members_place_joins_by_the_same_rule_with_that_members_minutes_saved() -> None:
    def row(gains: list[float], fit: float, saved: float) -> dict:
        return {"gain_rule": False, "fit_minutes": fit, "in_place_of": {"member": "m", "macro_f1_gains": gains, "member_fit_minutes": saved}}

    rows = {"swap": row([0.004, 0.003, 0.005], 40.0, 38.0), "slow": row([0.004, 0.003, 0.005], 40.0, 10.0),
            "weak": row([0.004, -0.001, 0.005], 40.0, 38.0)}
    found = quality_candidates.apply_time_budget({"rows": rows}, cold_minutes=82.0, budget=90)
    assert {n: (r["in_place_of"]["joins"], r["in_place_of"]["cold_minutes_with"]) for n, r in found["rows"].items()} == {
        "swap": (True, 84.0), "slow": (False, 112.0), "weak": (False, 84.0)}
    assert [quality_doc._join_verdict(found["rows"][n]) for n in ("swap", "slow", "weak")] == ["in place of m", "no", "no"]
    # the member's minutes saved are the cold run's where it timed them (same clock as the cold total)
    timed = quality_candidates.apply_time_budget({"rows": {"swap": row([0.004] * 3, 40.0, 38.0)}}, 82.0, 90, {"m": 1800.0})
    assert timed["rows"]["swap"]["in_place_of"]["cold_minutes_with"] == 92.0 and not timed["rows"]["swap"]["in_place_of"]["joins"]


def test_a_candidate_that_passes_the_gain_rule_joins_only_within_the_cold_time_budget() -> None:
    rows = {"fast": {"gain_rule": True, "fit_minutes": 10.0}, "slow": {"gain_rule": True, "fit_minutes": 30.0},
            "weak": {"gain_rule": False, "fit_minutes": 1.0}, "old": {"joins": True}}  # "old": recorded before fit times
    found = quality_candidates.apply_time_budget({"rows": rows}, cold_minutes=70.0, budget=90)
    verdicts = {name: (row["joins"], row["cold_minutes_with"]) for name, row in found["rows"].items()}
    assert verdicts == {"fast": (True, 80.0), "slow": (False, 100.0), "weak": (False, 71.0), "old": (True, None)}
    assert [quality_doc._join_verdict(found["rows"][n]) for n in ("fast", "slow", "weak")] == ["yes", "no: over the time budget", "no"]
    unmeasured = quality_candidates.apply_time_budget({"rows": {"slow": {"gain_rule": True, "fit_minutes": 30.0}}}, cold_minutes=None)
    assert unmeasured["rows"]["slow"]["joins"] and unmeasured["time_budget_minutes"] == quality.TARGETS["cold_minutes"]


def test_dev_check_names_a_precision_other_than_the_oof_runs(tmp_path) -> None:
    members = [{"name": "ft", "kind": "pooled-finetune", "params": {"precision": "bf16"}}, {"name": "tf", "kind": "head", "features": "tfidf"}]
    (tmp_path / "config.json").write_text(json.dumps({"members": members}))
    assert quality.finetune_precision(tmp_path) == "bf16"
    row = {"macro_f1": 0.6, "micro_f1": 0.7, "jaccard": 0.6}
    dev = {"n_eval": 10, "finetune_precision": "auto", **{key: {"stack": row, "members": {}} for key in quality.DEV_STACKS}}
    assert any("predates the precision change" in line for line in quality_doc._dev_lines(dev, "bf16"))
    assert not any("predates" in line for line in quality_doc._dev_lines(dev | {"finetune_precision": "bf16"}, "bf16"))


def test_candidates_fitted_in_batches_keep_earlier_rows_scored_against_the_same_kept_set() -> None:
    def found(run: str, base: float, names: list[str], kept: list[str]) -> dict:
        rows = {n: {"what": "head: x", "alone": {"macro_f1": 0.5}, "macro_f1_gains": [0.001, 0.002], "jaccard_gains": [0.0, 0.0],
                    "joins": False, "run": run, "baseline_macro_f1": base} for n in names}
        return {"run": run, "kept": kept, "baseline": {"macro_f1": {"mean": base}}, "rows": rows}

    earlier = found("old", 0.61, ["a", "b"], ["k1", "k2"])
    del earlier["rows"]["a"]["run"], earlier["rows"]["a"]["baseline_macro_f1"]  # rows written before these were recorded
    merged = quality_candidates.merge_candidates(earlier, found("new", 0.612, ["b", "c"], ["k2", "k1"]))
    assert list(merged["rows"]) == ["a", "b", "c"] and merged["run"] == "new"
    assert merged["rows"]["a"]["run"] == "old" and merged["rows"]["a"]["baseline_macro_f1"] == 0.61
    assert merged["rows"]["b"]["run"] == "new"  # re-measured rows replace earlier ones
    table = "\n".join(quality_doc._candidates_table(merged, 0.003))
    assert "| a | head: x | 0.5000 | 0.6100 |" in table and "| c | head: x | 0.5000 | 0.6120 |" in table
    # against another kept set the earlier rows would compare different stacks: they are dropped
    assert list(quality_candidates.merge_candidates(earlier, found("new", 0.6, ["c"], ["k1"]))["rows"]) == ["c"]


def test_fits_with_other_seeds_are_scored_alike_and_rendered_with_their_spread(tmp_path) -> None:
    from synthetic import write_kaggle

    from embedensemble import EnsembleConfig
    from embedensemble.config import CVConfig, MemberConfig
    from embedensemble.data import load_dataset
    from embedensemble.training import fit_ensemble

    members = [MemberConfig(name="tfidf-logreg", features="tfidf", head="logreg"),
               MemberConfig(name="tfidf-ridge", features="tfidf", head="ridge")]
    splits = load_dataset(write_kaggle(tmp_path / "k", n_train=150, n_test=10))
    for seed in (1, 2):
        config = EnsembleConfig(name="q", seed=seed, members=members, cv=CVConfig(n_folds=3, seed=seed))
        fit_ensemble(config, splits.train, run_dir=tmp_path / f"run{seed}")
    found = quality.fit_seeds([tmp_path / "run1", tmp_path / "run2"], [0, 1], None, ["tfidf-logreg", "tfidf-ridge"])
    assert [row["fit_seed"] for row in found["rows"]] == [1, 2]
    second = quality.Scorer(tmp_path / "run2", [0, 1], None)
    assert found["rows"][1]["quality"] == quality._summary(second.stack(["tfidf-logreg", "tfidf-ridge"]))
    assert found["rows"][1]["default"] == quality._summary(second.stack(["tfidf-logreg"]))  # the default.json members it has
    lines = "\n".join(quality_doc._fit_seed_lines(found))
    means = [row["quality"]["macro_f1"]["mean"] for row in found["rows"]]
    assert f"| mean ± sd (2 fits) | – | {np.mean(means):.4f} ± {np.std(means, ddof=1):.4f} |" in lines
    from benchmarks import summary

    (row,) = summary._fit_seed_rows({"fit_seeds": found, "rows": 150, "meta_seeds": [0, 1]})
    assert row[0].startswith("`quality` config across 2 fits (fit seeds 1, 2)")
    assert row[1].startswith(f"{np.mean(means):.3f} ± {np.std(means, ddof=1):.3f}; ")
    assert summary._fit_seed_rows({"fit_seeds": {"rows": found["rows"][:1]}}) == []  # one fit has no spread
    with pytest.raises(SystemExit, match="lacks the kept members"):
        quality.fit_seeds([tmp_path / "run1"], [0], None, ["mpnet-ft-top3"])


def test_a_new_oof_measure_keeps_the_dev_check_and_candidates_scored_against_the_same_kept_set() -> None:
    earlier = {"dev_check": {"n_eval": 886}, "candidates": {"kept": ["a", "b"], "rows": {}}, "fit_seeds": {"rows": []},
               "selection": {"kept": ["a", "b"]}}
    same = quality.carry_over(earlier, {"selection": {"kept": ["b", "a"]}, "run": "new"})
    assert same["dev_check"] == {"n_eval": 886} and same["candidates"] == earlier["candidates"]
    assert "fit_seeds" not in same  # refits are compared with the main run the new measure replaced
    other = quality.carry_over(earlier, {"selection": {"kept": ["a"]}, "run": "new"})
    assert "candidates" not in other and other["dev_check"] == {"n_eval": 886}
    assert quality.carry_over({}, {"selection": {"kept": ["a"]}}) == {"selection": {"kept": ["a"]}}


def test_a_dev_check_older_than_a_kept_member_says_which_members_it_lacks() -> None:
    row = {"macro_f1": 0.6, "micro_f1": 0.7, "jaccard": 0.6}
    dev = {"n_eval": 10, **{key: {"stack": row, "members": {"a": row}} for key in quality.DEV_STACKS}}
    assert quality_doc.dev_missing_members(dev, ["a", "b"]) == ["b"]
    assert any("predates the kept members ['b']" in line for line in quality_doc._dev_lines(dev, None, ["a", "b"]))
    assert not any("predates" in line for line in quality_doc._dev_lines(dev, None, ["a"]))


def test_a_head_on_fine_tuned_embeddings_costs_its_fit_plus_the_pass_that_made_its_sources_tables(tmp_path) -> None:
    from embedensemble.fileio import write_json

    def member(name: str, seconds: float, features: str) -> None:
        write_json(tmp_path / "members" / name / "member.json", {"fit_seconds": seconds, "config": {"name": name, "features": features}})

    member("plain", 60.0, "minilm")
    member("ft-head", 30.0, "finetuned:src")
    member("ft-head-old", 30.0, "finetuned:old-src")
    write_json(tmp_path / "members" / "src" / "embeddings.json", {"complete": True, "seconds": 150.0})
    write_json(tmp_path / "members" / "old-src" / "embeddings.json", {"complete": True})  # made before the pass was timed
    assert [quality_candidates._fit_minutes(tmp_path, n) for n in ("plain", "ft-head", "ft-head-old")] == [1.0, 3.0, None]


def test_a_fine_tune_candidate_is_described_by_what_it_changes() -> None:
    member = {"name": "c", "kind": "pooled-finetune", "backbone": "mpnet",
              "params": {"train_top_layers": 3, "pos_weight": "auto", "lca_weight": 0.2, "epochs": 3, "seed": 7}}
    assert quality_candidates._describe(member) == "pooled-finetune: mpnet, top 3 layers, pos_weight auto, LCA loss weight 0.2, seed 7"
