"""``python -m benchmarks.run [--quick] [--sections quality,cv,speed,finetune] [--out DIR] [--no-readme]``

Sections (each writes ``<out>/<section>.json``):

* ``quality``: the config fitted on SemEval-2018 E-c train, scored on dev (members, stack, baselines,
  published references); run folder ``artifacts/bench-semeval``.
* ``cv``: the config fitted on the Kaggle folder (SemEval train+dev), K-fold out-of-fold metrics;
  ``artifacts/bench-kaggle`` (a finished run is reused: ``fit`` skips finished members).
* ``speed``: see :mod:`benchmarks.speed`.
* ``finetune``: ``experiments/finetune-cpu.json`` on SemEval train -> dev; ``artifacts/bench-finetune``.

``--quick`` is a CI-sized version of everything (small subsets, 2 folds, tfidf + minilm members) whose
run folders live in a temporary folder; it touches the README only with ``--readme``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from . import RESULTS_DIR, ROOT, SECTIONS, Section, logger

DATA_ROOT = ROOT.parent / "shared" / "data"
FULL_SIZES = {"speed_texts": 2000, "repeats": 2, "fit_rows": 2000, "predict": 10_000, "latency_calls": 50, "no_cache": 500,
              "trainer_rows": None, "trainer_epochs": 3.0}
QUICK_SIZES = {"speed_texts": 100, "repeats": 1, "fit_rows": 200, "predict": 200, "latency_calls": 5, "no_cache": 60,
               "trainer_rows": 32, "trainer_epochs": 1.0, "train": 300, "dev": 100, "test": 60, "kaggle": 300, "folds": 2, "ft_steps": 2}


@dataclass
class Bench:
    """What every section needs: options, data (subsets in quick mode) and the config."""

    quick: bool
    out: Path
    runs_root: Path
    config_path: Path
    semeval_dir: Path
    kaggle_dir: Path
    finetune_config: Path
    cache_dir: str | None = None
    threads: int = 1  # torch threads of this process (set in ``main``)
    torch_default_threads: int = 1  # what torch picked before the benchmark changed it
    reuse_baselines: bool = False  # quality: keep the plain baselines of the previous quality.json
    sizes: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.sizes = dict(QUICK_SIZES if self.quick else FULL_SIZES)

    _PATHS = ("out", "runs_root", "config_path", "semeval_dir", "kaggle_dir", "finetune_config")

    def to_spec(self) -> dict[str, Any]:
        """JSON-able options, so a child process can rebuild the same ``Bench`` (same data subsets)."""
        spec = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "sizes"}
        return {k: str(v) if k in self._PATHS else v for k, v in spec.items()}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Bench:
        return cls(**{k: Path(v) if k in cls._PATHS else v for k, v in spec.items()})

    @cached_property
    def semeval(self) -> Any:
        from embedensemble import load_dataset

        splits = load_dataset(self.semeval_dir)
        if self.quick:
            splits.train = _sample(splits.train, self.sizes["train"])
            splits.eval = _sample(splits.eval, self.sizes["dev"])
            splits.test = _sample(splits.test, self.sizes["test"]) if splits.test is not None else None
        return splits

    @property
    def semeval_train(self) -> Any:
        return self.semeval.train

    @property
    def semeval_dev(self) -> Any:
        return self.semeval.eval

    @property
    def semeval_test(self) -> Any:
        return self.semeval.test

    @property
    def speed_backbones(self) -> list[str]:
        return ["minilm"] if self.quick else ["minilm", "mpnet"]

    def config(self, path: Path | None = None) -> Any:
        """The config (default ``--config``); in quick mode only its tfidf/minilm logreg and fine-tuned members, 2 folds."""
        from embedensemble import EnsembleConfig

        config = EnsembleConfig.load(path or self.config_path)
        if self.cache_dir:
            config.cache_dir = self.cache_dir
        if self.quick:
            keep = [m for m in config.members if (m.kind == "head" and m.features in ("tfidf", "minilm") and m.head == "logreg") or m.kind != "head"]
            config.members = keep or config.members[:2]
            for member in config.members:
                if member.kind != "head":
                    member.params = {**member.params, "epochs": 1.0, "max_steps": self.sizes["ft_steps"]}
            config.cv = dataclasses.replace(config.cv, n_folds=self.sizes["folds"])
        return config

    def run_dir(self, name: str) -> Path:
        return self.runs_root / name


def _sample(corpus: Any, n: int) -> Any:
    rows = np.sort(np.random.default_rng(0).choice(len(corpus), size=min(n, len(corpus)), replace=False))
    return corpus.subset(rows)


def _member_fit_info(run_dir: Path, name: str) -> dict[str, Any]:
    from embedensemble.run_folder import RunFolder, read_fold_done

    run = RunFolder(run_dir)
    status = run.member_status(name) or {}
    folds = [read_fold_done(fold) or {} for fold in run.finished_folds(name)]
    return {"fit_seconds": status.get("fit_seconds"), "folds_fitted_now": status.get("folds_fitted_now"),
            "head_fit_seconds": round(sum(done.get("fit_seconds", 0.0) for done in folds), 1)}


def _done_members(config: Any, run_dir: Path) -> list[str]:
    from embedensemble.run_folder import RunFolder

    run = RunFolder(run_dir)
    return [m.name for m in config.members if run.is_member_done(m.name)]


def _metrics(run_dir: Path) -> dict[str, Any]:
    from embedensemble.fileio import read_json
    from embedensemble.run_folder import RunFolder

    return read_json(RunFolder(run_dir).metrics_file)


def _fit_and_stack(section: Section, config: Any, train: Any, run_dir: Path, *, test: Any = None, eval: Any = None, info: dict | None = None) -> dict:
    from embedensemble.fitting import fit_members
    from embedensemble.stacking import stack_run

    done_before = _done_members(config, run_dir)
    with section.time("fit_members"):
        fit_members(config, train, run_dir, test=test, eval=eval, data_info=info)
    with section.time("stack"):
        stack_run(run_dir, write_report=False)
    section.result.update(run_dir=str(run_dir), config=config.name, n_folds=config.cv.n_folds, members_reused=done_before,
                          n_train=len(train), n_eval=len(eval) if eval is not None else 0, n_test=len(test) if test is not None else 0)
    return _metrics(run_dir)


def _compare(metrics: dict, split: str) -> dict[str, Any]:
    members = {name: m[split]["macro_f1"] for name, m in metrics["members"].items()}
    best = max(members, key=members.get)
    stack = metrics["stack"][split]["macro_f1"]
    return {"metric": "macro_f1", "split": split, "stack": stack, "best_member": best, "best_member_score": members[best],
            "margin": round(stack - members[best], 4), "stack_beats_best_member": bool(stack > members[best])}


def run_quality(bench: Bench) -> Path:
    from . import baselines

    section = Section("quality", bench.out, bench.quick)
    res = section.result
    train, dev, test = bench.semeval_train, bench.semeval_dev, None if bench.quick else bench.semeval_test
    res["data"] = {"folder": str(bench.semeval_dir), "train": "SemEval-2018 E-c train", "eval": "SemEval-2018 E-c dev"}
    metrics = _fit_and_stack(section, bench.config(), train, bench.run_dir("bench-semeval"), test=test, eval=dev, info={"benchmark": "quality"})
    run_dir = Path(res["run_dir"])
    res["members"] = {name: {**m, **_member_fit_info(run_dir, name)} for name, m in metrics["members"].items()}
    res["stack"] = metrics["stack"]
    res["stack_vs_best_member"] = _compare(metrics, "eval")
    res["stack_vs_best_member_oof"] = _compare(metrics, "oof")
    verdict = res["stack_vs_best_member"]
    (logger.info if verdict["stack_beats_best_member"] else logger.warning)(
        "dev macro-F1: stack %.4f vs best member %s %.4f", verdict["stack"], verdict["best_member"], verdict["best_member_score"])
    previous = bench.out / "quality.json"
    if bench.reuse_baselines and previous.is_file() and json.loads(previous.read_text()).get("baselines"):
        # The plain baselines do not depend on the library's config: a config change need not re-measure them.
        old = json.loads(previous.read_text())
        res["baselines"], res["baselines_measured"] = old["baselines"], old.get("finished") or old["machine"].get("date")
        res["references"] = baselines.REFERENCES
        return section.finish()
    res["baselines"] = {}
    with section.time("baseline_tfidf_logreg"):
        res["baselines"]["tfidf-logreg (sklearn)"] = baselines.tfidf_logreg(train.texts, train.labels, dev.texts, dev.labels)
    for backbone in bench.speed_backbones:
        with section.time(f"baseline_st_{backbone}"):
            res["baselines"][f"{backbone} SentenceTransformer + LR"] = baselines.st_logreg(backbone, train.texts, train.labels, dev.texts, dev.labels)
    rows = np.arange(len(train)) if bench.sizes["trainer_rows"] is None else np.arange(min(bench.sizes["trainer_rows"], len(train)))
    with section.time("baseline_trainer"):
        res["baselines"]["minilm HF Trainer fine-tune"] = baselines.trainer_finetune(
            "minilm", [train.texts[i] for i in rows], train.labels[rows], dev.texts, dev.labels, epochs=bench.sizes["trainer_epochs"])
    for name, baseline in res["baselines"].items():
        logger.info("baseline %s: dev macro-F1 %.4f", name, baseline["eval"]["macro_f1"])
    res["references"] = baselines.REFERENCES
    return section.finish()


def run_cv(bench: Bench) -> Path:
    from embedensemble import load_dataset

    section = Section("cv", bench.out, bench.quick)
    splits = load_dataset(bench.kaggle_dir)
    train = _sample(splits.train, bench.sizes["kaggle"]) if bench.quick else splits.train
    section.result["data"] = {"folder": str(bench.kaggle_dir), "train": "Kaggle train.csv (SemEval-2018 E-c train+dev)"}
    metrics = _fit_and_stack(section, bench.config(), train, bench.run_dir("bench-kaggle"), test=None if bench.quick else splits.test, info={"benchmark": "cv"})
    run_dir = Path(section.result["run_dir"])
    section.result["members"] = {name: {**m, **_member_fit_info(run_dir, name)} for name, m in metrics["members"].items()}
    section.result["stack"] = metrics["stack"]
    section.result["stack_vs_best_member"] = _compare(metrics, "oof")
    return section.finish()


def _reuse_members(bench: Bench, config: Any, run_dir: Path, names: list[str]) -> list[str]:
    """Copy finished members from the quality run when data, folds and member config are identical (saves refitting)."""
    from embedensemble.cv import make_folds
    from embedensemble.fitting import corpus_fingerprint
    from embedensemble.run_folder import RunFolder

    source, target = RunFolder(bench.run_dir("bench-semeval")), RunFolder(run_dir)
    if bench.quick or not source.run_file.is_file():
        return []
    prints = source.run_info().get("fingerprints", {})
    if prints.get("train") != corpus_fingerprint(bench.semeval_train) or prints.get("eval") != corpus_fingerprint(bench.semeval_dev):
        return []
    if not np.array_equal(source.folds("kfold"), make_folds(bench.semeval_train.labels, config.cv, "kfold")):
        return []
    copied = []
    for name in names:
        status = source.member_status(name) or {}
        if (status.get("status") == "done" and status.get("config") == dataclasses.asdict(config.member(name))
                and status.get("cv_mode") == config.cv.mode and not target.member_dir(name).exists()):
            shutil.copytree(source.member_dir(name), target.member_dir(name))
            copied.append(name)
    return copied


def _finetune_comparison(config: Any, res: dict, tuned: list[str], frozen: list[str]) -> dict[str, Any]:
    """Each fine-tuned member against the frozen member on the same backbone, and the stack with vs without them."""
    members = res["members"]
    pairs = []
    for name in tuned:
        backbone = config.member(name).backbone
        if not backbone:  # a head on fine-tuned embeddings: compared through the stack only
            continue
        ref = next((f for f in frozen if config.member(f).features == backbone), frozen[0])
        pairs.append({"finetuned": name, "frozen": ref,
                      "finetuned_macro_f1": members[name]["eval"]["macro_f1"], "frozen_macro_f1": members[ref]["eval"]["macro_f1"],
                      "finetuned_macro_f1_at_0.5": members[name]["eval_at_0.5"]["macro_f1"], "frozen_macro_f1_at_0.5": members[ref]["eval_at_0.5"]["macro_f1"],
                      "finetuned_fit_seconds": members[name]["fit_seconds"], "frozen_fit_seconds": members[ref]["fit_seconds"]})
    with_ft, without = res["stack_with_finetuned"]["eval"]["macro_f1"], res["stack_without_finetuned"]["eval"]["macro_f1"]
    return {"members": pairs, "stack_with_macro_f1": with_ft, "stack_without_macro_f1": without, "stack_gain": round(with_ft - without, 4)}


def run_finetune(bench: Bench) -> Path:
    """Skipped only when the fine-tune config file is absent; any failure fails the section (and the run)."""
    from embedensemble.fitting import fit_members
    from embedensemble.stacking import stack_run

    section = Section("finetune", bench.out, bench.quick)
    res = section.result
    res["config_path"] = str(bench.finetune_config)
    if not bench.finetune_config.is_file():
        res.update(skipped=True, reason=f"{bench.finetune_config} does not exist")
        return section.finish()
    config = bench.config(bench.finetune_config)
    # Heads on a fine-tuned member's embeddings ("finetuned:<name>") count as fine-tuned members.
    tuned = [m.name for m in config.members if m.kind != "head" or m.feature_source]
    frozen = [m.name for m in config.members if m.name not in tuned]
    if not tuned or not frozen:
        raise ValueError(f"{bench.finetune_config} needs fine-tuned and frozen members; it has fine-tuned {tuned}, frozen {frozen}")
    run_dir = bench.run_dir("bench-finetune")
    run_dir.mkdir(parents=True, exist_ok=True)
    res["members_reused"] = _done_members(config, run_dir)
    res["members_copied_from_quality_run"] = _reuse_members(bench, config, run_dir, frozen)
    with section.time("fit_members"):
        fit_members(config, bench.semeval_train, run_dir, eval=bench.semeval_dev, data_info={"benchmark": "finetune"})
    with section.time("stack_without_finetuned"):
        stack_run(run_dir, members=frozen, write_report=False)
    res["stack_without_finetuned"] = _metrics(run_dir)["stack"]
    with section.time("stack_with_finetuned"):
        stack_run(run_dir, write_report=False)  # the full stack is what the run folder keeps
    metrics = _metrics(run_dir)
    res["members"] = {name: {**m, **_member_fit_info(run_dir, name)} for name, m in metrics["members"].items()}
    res["stack_with_finetuned"] = metrics["stack"]
    res["comparison"] = _finetune_comparison(config, res, tuned, frozen)
    res["stack_vs_best_member"] = _compare(metrics, "eval")
    res.update(run_dir=str(run_dir), n_folds=config.cv.n_folds, n_train=len(bench.semeval_train), n_eval=len(bench.semeval_dev),
               finetuned_members=tuned, frozen_members=frozen, member_params={m.name: m.params for m in config.members if m.kind != "head"})
    res["skipped"] = False
    return section.finish()


def run_speed(bench: Bench) -> Path:
    from . import speed

    return speed.run(bench)


RUNNERS = {"quality": run_quality, "cv": run_cv, "speed": run_speed, "finetune": run_finetune}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI-sized run (small subsets, 2 folds, temporary run folders)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where <section>.json files go (default benchmarks/results)")
    parser.add_argument("--no-readme", action="store_true", help="do not update the README results block")
    parser.add_argument("--reuse-baselines", action="store_true",
                        help="quality: keep the plain baselines (sklearn, SentenceTransformer + LR, HF Trainer) of the previous quality.json")
    parser.add_argument("--readme", action="store_true", help="update the README block even with --quick")
    parser.add_argument("--config", type=Path, default=ROOT / "experiments" / "default.json")
    parser.add_argument("--finetune-config", type=Path, default=ROOT / "experiments" / "finetune-cpu.json")
    parser.add_argument("--semeval", type=Path, default=DATA_ROOT / "semeval2018-ec")
    parser.add_argument("--kaggle", type=Path, default=DATA_ROOT / "kaggle-emotion")
    parser.add_argument("--runs", type=Path, default=None, help="parent of the run folders (default artifacts/; --quick: a temporary folder)")
    parser.add_argument("--cache-dir", default=None, help="embedding cache for quality/cv/finetune fits (default: the config's)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for the whole run (default: the library's encoder policy at start, 1 on an oversubscribed machine)")
    args = parser.parse_args(argv)
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(args.sections) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {unknown}; choose from {list(SECTIONS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    import torch

    from . import library_threads, setup_logging

    args = parse_args(argv)
    setup_logging(args.quick)
    temporary = args.runs is None and args.quick
    runs_root = Path(tempfile.mkdtemp(prefix="bench-quick-")) if temporary else (args.runs or ROOT / "artifacts")
    runs_root.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    bench = Bench(args.quick, args.out, runs_root, args.config, args.semeval, args.kaggle, args.finetune_config, args.cache_dir)
    bench.torch_default_threads = torch.get_num_threads()
    bench.threads = args.threads or library_threads()
    bench.reuse_baselines = args.reuse_baselines
    torch.set_num_threads(bench.threads)  # Trainer, fine-tuning and plain sentence-transformers follow it
    logger.info("torch threads: %d (torch default %d, load average %.1f)", bench.threads, bench.torch_default_threads, os.getloadavg()[0])
    failed = []
    try:
        for name in args.sections:
            logger.info("section %s%s", name, " (quick)" if args.quick else "")
            try:
                RUNNERS[name](bench)
            except Exception:  # noqa: BLE001 - the other sections still run; the exit code is 1
                logger.exception("section %s failed; its JSON was not written", name)
                failed.append(name)
    finally:
        if temporary:
            shutil.rmtree(runs_root, ignore_errors=True)
    if not failed and (args.readme or (not args.quick and not args.no_readme)):  # never render a mix of old and new results
        from .readme import update_readme

        update_readme(args.out)
    if failed:
        logger.error("failed sections: %s", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
