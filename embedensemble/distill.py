"""``python -m embedensemble.distill``: one small student model trained on a stacked run's soft labels.

    python -m embedensemble.distill --run artifacts/default [--unlabeled more_tweets.csv] [--onnx int8]

The teacher is a stacked run. The student (default: MiniLM fine-tuned fully, a
``pooled-finetune`` member) learns the stack's probabilities, with BCE on soft targets:

* train rows: the stack's out-of-fold probabilities (``stack_oof.npy``), except the run's
  holdout rows (``folds_holdout.npy``, 20%), which the student never sees;
* the run's test tweets: the stack's probabilities (``stack_test.npy``);
* any ``--unlabeled`` tweets: predicted by the run's saved ensemble.

Per-emotion thresholds are tuned on the student's predictions of the held-out train rows
(never on the eval split). The result is a normal :class:`EmotionEnsemble` folder holding ONE
model (``run/student`` by default): ``load``/``predict``/``predict_proba``, the manifest's
checksums and pickle refusal as for any ensemble, plus ``"student_of"`` in its manifest (the
teacher run and its ensemble manifest's sha256). Teacher and student quality, on the held-out
rows and on the eval split when the run has one, go to ``<student>.distill.json`` beside it.

``--onnx int8`` ships the student as an ONNX Runtime model with int8 weights when that loses at
most 0.005 held-out macro-F1 against the torch student (else fp32 ONNX); see
:mod:`embedensemble.onnx_export`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._cli import add_verbosity, apply_verbosity, run_cli
from ._logging import get_logger
from .config import EnsembleConfig, MemberConfig, StackConfig
from .data import read_corpus
from .errors import ArtifactError, ConfigError, DataError, RunNotFoundError
from .fileio import load_array, read_json, sha256_file, write_json
from .labels import EMOTIONS
from .manifest import MANIFEST, verify_folder
from .metrics import evaluate
from .run_data import load_run_data
from .run_folder import RunFolder
from .stacker import Stacker
from .thresholds import ThresholdOptimizer

logger = get_logger(__name__)

STUDENT_NAME = "student"
ONNX_CHOICES = ("int8", "fp32")
MAX_INT8_LOSS = 0.005  # held-out macro-F1 the int8 student may lose against the torch student


@dataclass
class DistillSettings:
    """The student and how it is trained (``params`` override any :class:`FinetuneArgs` key)."""

    student: str = "minilm"
    epochs: float = 3.0
    lr: float = 5e-5
    head_lr: float = 2e-3  # the head starts from random weights: a larger step than the pretrained body
    batch_size: int = 32
    max_length: int = 128
    hard_label_weight: float = 0.0  # train-row targets = (1 - w) * soft + w * 0/1 labels
    max_rows: int | None = None  # subsample the soft-labelled rows (CPU budget); None = all
    onnx: str | None = None
    device: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def member_config(self, seed: int) -> MemberConfig:
        params = {
            "adapter": "none",
            "epochs": float(self.epochs),
            "lr": self.lr,
            "head_lr": self.head_lr,
            "batch_size": self.batch_size,
            "max_length": self.max_length,
            "seed": seed,
            **self.params,
        }
        return MemberConfig(name=STUDENT_NAME, kind="pooled-finetune", backbone=self.student, params=params)


def student_report_file(student_dir: str | os.PathLike) -> Path:
    """``<student>.distill.json``: teacher vs student quality, beside the student folder."""
    student_dir = Path(student_dir)
    return student_dir.with_name(student_dir.name + ".distill.json")


def read_unlabeled(path: str | os.PathLike) -> list[str]:
    """Tweets of a ``.txt`` file (one per non-empty line) or a Kaggle CSV / SemEval TSV (its ``Tweet`` column)."""
    path = Path(path)
    if not path.is_file():
        raise DataError("does not exist", file=path)
    if path.suffix == ".txt":
        texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not texts:
            raise DataError("holds no tweets (one per line expected)", file=path)
        return texts
    return read_corpus(path, require_labels=False).texts


def _teacher_manifest(run: RunFolder) -> tuple[dict[str, Any], str]:
    if not (run.ensemble_dir / MANIFEST).is_file():
        raise RunNotFoundError(
            f"run {run.path} has no saved ensemble: run `python -m embedensemble.stack --run {run.path}` first"
        )
    return verify_folder(run.ensemble_dir), sha256_file(run.ensemble_dir / MANIFEST)


def _soft_labels(
    run: RunFolder, data: Any, unlabeled: Sequence[str | os.PathLike], settings: DistillSettings, train_rows: np.ndarray
) -> tuple[list[str], np.ndarray, dict[str, int]]:
    """Student texts and targets: train rows (stack OOF), test tweets (stack test) and unlabeled tweets (teacher)."""
    stack_oof = load_array(run.stack_file("oof"))
    targets = stack_oof[train_rows]
    if settings.hard_label_weight:
        targets = (1 - settings.hard_label_weight) * targets + settings.hard_label_weight * data.train.labels[train_rows]
    texts = [data.train.texts[i] for i in train_rows]
    parts, counts = [targets], {"train_rows": len(train_rows)}
    if data.test is not None and run.stack_file("test").is_file():
        stack_test = load_array(run.stack_file("test"))
        if stack_test.shape != (len(data.test), len(EMOTIONS)):
            raise ArtifactError(
                f"{run.stack_file('test')} has shape {stack_test.shape}, the run's test file has {len(data.test)} tweets"
            )
        texts += data.test.texts
        parts.append(stack_test)
        counts["test"] = len(data.test)
    extra = [t for path in unlabeled for t in read_unlabeled(path)]
    if extra:
        from .ensemble import EmotionEnsemble

        logger.info("teacher predicts %d unlabeled tweets", len(extra))
        teacher = EmotionEnsemble.load(run.ensemble_dir, device=settings.device)
        parts.append(teacher.predict_proba(extra).to_numpy())
        texts += extra
        counts["unlabeled"] = len(extra)
    targets = np.concatenate(parts).astype(np.float32)
    if settings.max_rows is not None and settings.max_rows < len(texts):
        keep = np.sort(np.random.default_rng(0).choice(len(texts), settings.max_rows, replace=False))
        texts, targets = [texts[i] for i in keep], targets[keep]
        counts["used_after_max_rows"] = len(keep)
    return texts, targets, counts


def _thresholds(stack: StackConfig, proba: np.ndarray, labels: np.ndarray) -> ThresholdOptimizer:
    return ThresholdOptimizer.from_stack(stack).fit(proba, labels)


def _crossfit_scores(stack: StackConfig, proba: np.ndarray, labels: np.ndarray, seed: int) -> dict[str, Any]:
    """Scores at thresholds tuned on the other half of the rows (2 random halves): no row is scored by
    thresholds fitted on itself, unlike the plain held-out score whose thresholds saw every held-out row."""
    halves = np.array_split(np.random.default_rng(seed).permutation(len(labels)), 2)
    predicted = np.zeros_like(labels)
    for fit, score in ((halves[0], halves[1]), (halves[1], halves[0])):
        predicted[score] = _thresholds(stack, proba[fit], labels[fit]).predict(proba[score])
    return evaluate(labels, predicted)


def _student_ensemble_config(teacher: EnsembleConfig, member: MemberConfig) -> EnsembleConfig:
    data = teacher.to_dict()
    data.update(name=f"{teacher.name}-student", members=[asdict(member)])
    data["stack"] = {**data["stack"], "meta_learner": "mean", "members": None}
    return EnsembleConfig.from_dict(data, where="student config")


def _ship(
    student: Any,
    settings: DistillSettings,
    staging: Path,
    hold_texts: list[str],
    y_hold: np.ndarray,
    p_torch: np.ndarray,
    stack: StackConfig,
) -> tuple[Path, MemberConfig, np.ndarray, dict[str, Any]]:
    """The fold folder to ship (torch, or ONNX when asked and good enough), its config and held-out probabilities."""
    torch_dir = staging / "torch"
    student.save(torch_dir)
    if settings.onnx is None:
        return torch_dir, student.config, p_torch, {}
    from .members.base import load_member
    from .onnx_export import export_student

    torch_f1 = evaluate(y_hold, _thresholds(stack, p_torch, y_hold).predict(p_torch))["macro_f1"]
    record: dict[str, Any] = {"requested": settings.onnx, "torch_holdout_macro_f1": torch_f1, "max_int8_loss": MAX_INT8_LOSS}
    for precision in ("int8", "fp32") if settings.onnx == "int8" else ("fp32",):
        folder = export_student(student, staging / f"onnx-{precision}", precision=precision)
        proba = load_member(folder).predict_proba(hold_texts)
        f1 = evaluate(y_hold, _thresholds(stack, proba, y_hold).predict(proba))["macro_f1"]
        record[f"{precision}_holdout_macro_f1"] = f1
        if precision == "fp32" or torch_f1 - f1 <= MAX_INT8_LOSS:
            record["used"] = precision
            config = MemberConfig(**read_json(folder / "fold.json")["config"])
            return folder, config, proba, record
        logger.info("int8 student loses %.4f held-out macro-F1 (> %.3f): shipping fp32 ONNX", torch_f1 - f1, MAX_INT8_LOSS)
    raise AssertionError("unreachable: fp32 is always accepted")


def distill(
    run_dir: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    unlabeled: Sequence[str | os.PathLike] = (),
    settings: DistillSettings | None = None,
    data_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Train the student of stacked run ``run_dir``, save it as an ensemble folder; returns the report."""
    from .backbones import torch_threads
    from .ensemble import EmotionEnsemble
    from .members.base import MemberContext, build_member

    settings = settings or DistillSettings()
    if settings.onnx is not None and settings.onnx not in ONNX_CHOICES:
        raise ConfigError(f"--onnx {settings.onnx!r} is not one of {list(ONNX_CHOICES)}")
    run = RunFolder(run_dir)
    run.require_config()
    if not run.stack_file("oof").is_file() or not run.thresholds_file.is_file():
        raise RunNotFoundError(f"run {run.path} is not stacked: run `python -m embedensemble.stack --run {run.path}` first")
    out = Path(out) if out is not None else run.student_dir
    teacher_config = EnsembleConfig.load(run.config_file)
    _, teacher_sha = _teacher_manifest(run)
    data = load_run_data(run, data_dir)
    labels = data.train.labels.astype(int)
    stack_oof = load_array(run.stack_file("oof"))
    scored = np.isfinite(stack_oof).all(axis=1)
    held = (run.folds("holdout") == 0) & scored
    train_rows, hold_rows = np.flatnonzero(scored & ~held), np.flatnonzero(held)
    texts, targets, counts = _soft_labels(run, data, unlabeled, settings, train_rows)
    counts["holdout_rows"] = len(hold_rows)

    member_config = settings.member_config(teacher_config.seed)
    context = MemberContext(
        cache_dir=teacher_config.cache_dir, seed=teacher_config.seed, device=settings.device or teacher_config.device
    )
    staging = out.with_name(f".{out.name}.parts")
    logger.info("training student %s on %d soft-labelled tweets (%s)", settings.student, len(texts), counts)
    started = time.perf_counter()
    student = build_member(member_config, context)
    # The library's one thread policy: on an oversubscribed machine one torch thread trains ~10x faster than two.
    with torch_threads():
        student.fit(texts, targets, workdir=staging / "work")  # checkpoints: an interrupted distill resumes
        train_seconds = time.perf_counter() - started
        hold_texts, y_hold = [data.train.texts[i] for i in hold_rows], labels[hold_rows]
        p_torch = student.predict_proba(hold_texts)
        fold_dir, shipped_config, p_hold, onnx_record = _ship(
            student, settings, staging, hold_texts, y_hold, p_torch, teacher_config.stack
        )
    thresholds = _thresholds(teacher_config.stack, p_hold, y_hold)
    stacker = Stacker("mean").fit(p_hold[:, None, :], y_hold)  # one member: the stack is the student itself
    ensemble = EmotionEnsemble.from_parts(
        _student_ensemble_config(teacher_config, shipped_config), {STUDENT_NAME: [fold_dir]}, stacker, thresholds
    )

    teacher_thresholds = ThresholdOptimizer.load(run.thresholds_file)
    quality: dict[str, Any] = {
        "holdout": {
            "rows": len(hold_rows),
            "teacher": evaluate(y_hold, teacher_thresholds.predict(stack_oof[hold_rows])),
            "student": evaluate(y_hold, thresholds.predict(p_hold)),
        },
        # Both at thresholds tuned on the other half of the held-out rows: the fair comparison on these rows.
        "holdout_crossfit_thresholds": {
            "rows": len(hold_rows),
            "teacher": _crossfit_scores(teacher_config.stack, stack_oof[hold_rows], y_hold, teacher_config.seed),
            "student": _crossfit_scores(teacher_config.stack, p_hold, y_hold, teacher_config.seed),
        },
        "teacher_oof_all_rows": evaluate(labels[scored], teacher_thresholds.predict(stack_oof[scored])),
    }
    if data.eval is not None and run.stack_file("eval").is_file():
        y_eval = data.eval.labels.astype(int)
        with torch_threads():
            p_eval = ensemble.predict_proba(data.eval.texts).to_numpy()
        quality["eval"] = {
            "rows": len(y_eval),
            "teacher": evaluate(y_eval, teacher_thresholds.predict(load_array(run.stack_file("eval")))),
            "student": evaluate(y_eval, thresholds.predict(p_eval)),
        }
    gaps = {
        split: round(q["teacher"]["macro_f1"] - q["student"]["macro_f1"], 4)
        for split, q in quality.items()
        if isinstance(q, dict) and "student" in q
    }

    lineage = {"run": str(run.path.resolve()), "teacher_manifest_sha256": teacher_sha, "teacher_config": teacher_config.name}
    _save_student(ensemble, out, lineage)
    shutil.rmtree(staging, ignore_errors=True)
    report = {
        "teacher": lineage,
        "student": {
            "path": str(out.resolve()),
            "backbone": settings.student,
            "kind": shipped_config.kind,
            "settings": asdict(settings),
            "train_seconds": round(train_seconds, 1),
            "train_steps": student.train_stats_.get("steps"),
        },
        "soft_labels": counts,
        "thresholds_tuned_on": "holdout train rows (folds_holdout.npy == 0), never the eval split",
        "quality": quality,
        "macro_f1_gap_teacher_minus_student": gaps,
        "onnx": onnx_record,
    }
    write_json(student_report_file(out), report)
    logger.info("student saved to %s; macro-F1 gap (teacher - student): %s", out, gaps)
    return report


def _save_student(ensemble: Any, out: Path, lineage: dict[str, Any]) -> None:
    """Save the ensemble, add ``student_of`` to its manifest, then move it into place."""
    building = out.with_name(f".{out.name}.building")
    shutil.rmtree(building, ignore_errors=True)
    ensemble.save(building)
    manifest = read_json(building / MANIFEST)
    manifest["student_of"] = lineage  # not a file, so the checksums the manifest lists are unchanged
    write_json(building / MANIFEST, manifest)
    verify_folder(building)
    if out.exists():
        shutil.rmtree(out)
    os.replace(building, out)


def student_of(path: str | os.PathLike) -> dict[str, Any] | None:
    """The teacher a saved ensemble was distilled from (``None`` for an ensemble that is no student)."""
    return verify_folder(path).get("student_of")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m embedensemble.distill",
        description="Train one student model on a stacked run's soft labels and save it as an ensemble folder.",
    )
    parser.add_argument("--run", type=Path, required=True, help="a stacked run folder (the teacher)")
    parser.add_argument(
        "--unlabeled",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="more tweets for the teacher to label: .txt (one per line) or CSV/TSV with a Tweet column; repeatable",
    )
    parser.add_argument("--student", default="minilm", help="backbone preset (or HF id / path) of the student (default: minilm)")
    parser.add_argument("--out", type=Path, help="student folder (default: <run>/student)")
    parser.add_argument(
        "--onnx",
        choices=ONNX_CHOICES,
        help=f"ship the student as ONNX Runtime model (int8 if it loses <= {MAX_INT8_LOSS} held-out macro-F1)",
    )
    parser.add_argument("--epochs", type=float, default=DistillSettings.epochs)
    parser.add_argument("--lr", type=float, default=DistillSettings.lr)
    parser.add_argument("--batch-size", type=int, default=DistillSettings.batch_size)
    parser.add_argument("--max-length", type=int, default=DistillSettings.max_length, help="tokens per tweet")
    parser.add_argument("--max-rows", type=int, help="train on a random subset of this many soft-labelled tweets")
    parser.add_argument("--hard-label-weight", type=float, default=0.0, help="mix the train rows' 0/1 labels into their targets")
    parser.add_argument("--data", type=Path, help="data folder, if it moved since the run was fitted")
    parser.add_argument("--device", help="cpu, cuda, ... (default: the run's)")
    add_verbosity(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    apply_verbosity(args)
    if not 0.0 <= args.hard_label_weight <= 1.0:
        raise ConfigError(f"--hard-label-weight must be in [0, 1], got {args.hard_label_weight}")
    settings = DistillSettings(
        student=args.student,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        max_length=args.max_length,
        hard_label_weight=args.hard_label_weight,
        max_rows=args.max_rows,
        onnx=args.onnx,
        device=args.device,
    )
    report = distill(args.run, args.out, unlabeled=args.unlabeled, settings=settings, data_dir=args.data)
    print(f"{'':<10} {'split':<28} {'rows':>6} {'macro-F1':>9} {'micro-F1':>9}")
    for split, q in report["quality"].items():
        if isinstance(q, dict) and "student" in q:
            for who in ("teacher", "student"):
                print(f"{who:<10} {split:<28} {q['rows']:>6} {q[who]['macro_f1']:>9.4f} {q[who]['micro_f1']:>9.4f}")
    print(f"student:  {report['student']['path']} ({report['student']['kind']})")
    print(f"report:   {student_report_file(report['student']['path'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
