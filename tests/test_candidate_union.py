"""benchmarks.candidate_union: candidate runs fitted in batches, linked into one run that equals one fit of all."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks import candidate_union


def _fit(tmp_path: Path, name: str, members: list, fold_seed: int = 42) -> Path:
    from synthetic import write_kaggle

    from embedensemble import EnsembleConfig
    from embedensemble.config import CVConfig
    from embedensemble.data import load_dataset
    from embedensemble.training import fit_ensemble

    splits = load_dataset(write_kaggle(tmp_path / "data", n_train=150, n_test=10))
    config = EnsembleConfig(name="cand", members=members, cv=CVConfig(n_folds=3, seed=fold_seed))
    fit_ensemble(config, splits.train, run_dir=tmp_path / name)
    return tmp_path / name


def _members(*names: str, logreg_C: float = 1.0) -> list:
    from embedensemble.config import MemberConfig

    known = {"tfidf-logreg": MemberConfig(name="tfidf-logreg", features="tfidf", head="logreg", head_params={"C": logreg_C}),
             "tfidf-ridge": MemberConfig(name="tfidf-ridge", features="tfidf", head="ridge"),
             "tfidf-lgbm": MemberConfig(name="tfidf-lgbm", features="tfidf", head="lgbm", head_params={"n_estimators": 20})}
    return [known[n] for n in names]


def _without_timings(value):
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items() if "minutes" not in k and k != "run"}
    return value


def test_the_union_of_two_batches_is_the_run_one_fit_of_all_their_members_leaves(tmp_path) -> None:
    from benchmarks import quality_candidates, quality_doc
    from embedensemble.fileio import read_json
    from embedensemble.run_folder import RunFolder

    first = _fit(tmp_path, "first", _members("tfidf-logreg", "tfidf-ridge"))
    second = _fit(tmp_path, "second", _members("tfidf-logreg", "tfidf-lgbm"))
    together = _fit(tmp_path, "together", _members("tfidf-logreg", "tfidf-ridge", "tfidf-lgbm"))

    assert candidate_union.main(["--out", str(tmp_path / "union"), "--base", str(first), f"{second}:tfidf-lgbm"]) == 0
    union = tmp_path / "union"
    names = ["tfidf-logreg", "tfidf-ridge", "tfidf-lgbm"]
    assert [m["name"] for m in read_json(union / "config.json")["members"]] == names
    assert read_json(union / "config.json")["members"] == read_json(together / "config.json")["members"]
    assert np.array_equal(RunFolder(union).member_stack(names, "oof"), RunFolder(together).member_stack(names, "oof"))
    assert [m["name"] for m in read_json(first / "config.json")["members"]] == names[:2]  # the base is untouched
    found = [quality_candidates.candidates(run, [0], None, ["tfidf-logreg"]) for run in (union, together)]
    assert found[0]["assembled_from"] == {"base": str(first), "linked": {str(second): ["tfidf-lgbm"]}} and "assembled_from" not in found[1]
    scored = [_without_timings(f["rows"]) for f in found]  # fit minutes are timings, the rest must agree
    assert scored[0] == scored[1] and set(scored[0]) == {"tfidf-ridge", "tfidf-lgbm"}
    text = "\n".join(quality_doc._candidates_table(quality_candidates.apply_time_budget(found[0], None), 0.003))
    assert f"`{first}` and the candidates of `{second}` (tfidf-lgbm)" in text


def test_a_source_with_other_folds_or_another_fit_of_a_shared_member_is_refused_and_nothing_is_written(tmp_path) -> None:
    first = _fit(tmp_path, "first", _members("tfidf-logreg", "tfidf-ridge"))
    other_folds = _fit(tmp_path, "other-folds", _members("tfidf-lgbm"), fold_seed=7)
    other_fit = _fit(tmp_path, "other-fit", _members("tfidf-logreg", "tfidf-lgbm", logreg_C=0.1))

    out = tmp_path / "union"
    with pytest.raises(SystemExit, match="folds_kfold.npy differs"):
        candidate_union.union_run(out, first, {other_folds: ["tfidf-lgbm"]})
    with pytest.raises(SystemExit, match="member 'tfidf-logreg' is not the same fit"):
        candidate_union.union_run(out, first, {other_fit: ["tfidf-lgbm"]})
    with pytest.raises(SystemExit, match="already in"):
        candidate_union.union_run(out, first, {first: ["tfidf-ridge"]})
    with pytest.raises(SystemExit, match="no finished member 'tfidf-nb'"):
        candidate_union.union_run(out, first, {first: ["tfidf-nb"]})
    assert not out.exists() and not list(tmp_path.glob(".union*"))


def test_a_run_named_twice_on_the_command_line_keeps_every_member_and_a_member_named_twice_is_refused(tmp_path) -> None:
    pairs = [candidate_union._source("runs/b:m1"), candidate_union._source("runs/c:m2"), candidate_union._source("runs/b/:m3")]
    assert candidate_union.merge_sources(pairs) == {Path("runs/b"): ["m1", "m3"], Path("runs/c"): ["m2"]}
    with pytest.raises(SystemExit, match=r"named twice: \['m1'\]"):
        candidate_union.union_run(tmp_path / "union", tmp_path / "base", {Path("runs/b"): ["m1", "m3", "m1"]})
    assert not (tmp_path / "union").exists()
