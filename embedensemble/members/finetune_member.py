"""What both fine-tuning members (``pooled-finetune``, ``seqcls-finetune``) share: fit/predict/save/load
around one logits module, trained and run by the engine in :mod:`embedensemble.finetune`.

A subclass builds ``self.model`` (a module mapping a padded batch to logits [batch, 11]),
``self.tokenizer`` and ``self.fmt`` in ``_build``, and says how its weights are saved.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from .._logging import get_logger
from ..backbones.tokens import TextFormat, tokenize
from ..backbones.weights import resolve_device
from ..config import MemberConfig
from ..errors import ArtifactError, NumericalError
from ..fileio import check_format_version, read_json, stable_hash, write_json
from ..finetune.args import FinetuneArgs
from ..finetune.parallel import current as data_parallel
from ..finetune.training import StepCallback, TokenizedData, predict_outputs, train, use_bf16
from ..normalise import normalise_tweet
from .base import FoldModel, MemberContext

logger = get_logger(__name__)

FORMAT_VERSION = 1
META_FILE = "finetune.json"
# Settings that change neither the trained weights nor the data order: a checkpoint written
# under other values of these can still be resumed.
_NOT_FINGERPRINTED = ("save_every_steps", "predict_batch_size", "frozen_cache_gb")


class FinetuneMember(FoldModel):
    """Base of the fine-tuning members; ``params`` of the config are parsed into :class:`FinetuneArgs`.

    ``step_callback(step, record)``, if set, is called after every optimizer step (progress
    reporting; tests use it to simulate an interruption). ``train_stats_`` holds the last fit's
    statistics (steps, seconds, examples per second, padding fraction, loss history).
    """

    append_eos: ClassVar[bool] = True

    def __init__(self, config: MemberConfig, context: MemberContext | None = None) -> None:
        super().__init__(config, context)
        self.args = FinetuneArgs.from_params(config.params, kind=self.kind, where=f"member '{config.name}': params")
        self.device = torch.device(resolve_device(self.context.device))
        self.bf16 = use_bf16(self.args, self.device)
        self.spec: Any = None
        self.tokenizer: Any = None
        self.model: torch.nn.Module | None = None
        self.fmt: TextFormat | None = None
        self.step_callback: StepCallback | None = None
        self.train_stats_: dict[str, Any] = {}

    @property
    def seed(self) -> int:
        return int(self.args.seed if self.args.seed is not None else self.context.seed)

    # -- subclass hooks ---------------------------------------------------------------------------------

    def _build(self, *, training: bool) -> None:
        """Set ``self.spec``, ``self.tokenizer``, ``self.fmt`` and ``self.model``."""
        raise NotImplementedError

    def _is_head_param(self, name: str) -> bool:
        return False

    def _save_weights(self, path: Path) -> None:
        raise NotImplementedError

    def _load_weights(self, path: Path) -> None:
        raise NotImplementedError

    # -- FoldModel ---------------------------------------------------------------------------------------

    def _fit(self, texts: list[str], labels: np.ndarray, *, workdir: Path | None) -> None:
        # Seeded before building so that the head and adapter initialisation repeat exactly.
        torch.manual_seed(self.seed)
        self._build(training=True)
        data = TokenizedData(self._tokenize(texts), labels)
        train_data, eval_data = self._split(data)
        fingerprint = self._fingerprint(texts, labels)
        with self._named_errors():
            self.train_stats_ = train(
                self.model,
                train_data,
                self.fmt,
                self.args,
                seed=self.seed,
                device=self.device,
                is_head=self._is_head_param,
                eval_data=eval_data,
                workdir=None if workdir is None else Path(workdir),
                fingerprint=fingerprint,
                step_callback=self.step_callback,
                show_progress_bar=self.context.show_progress_bar,
                parallel=data_parallel(self.device),  # None unless launched by torchrun (finetune/parallel.py)
            )
        stats = self.train_stats_
        logger.info(
            "%s: %d steps in %.1fs (%.1f texts/s, %.0f%% padding), last loss %.4f",
            self.config.name,
            stats["steps"],
            stats["train_seconds"],
            stats["examples_per_second"],
            100 * stats["padding_fraction"],
            stats["history"][-1]["loss"] if stats["history"] else float("nan"),
        )

    def _predict_proba(self, texts: list[str]) -> np.ndarray:
        logits = self._run(self.model, texts)
        return torch.sigmoid(torch.from_numpy(logits)).numpy()  # no overflow warnings for large |logits|

    def _save(self, path: Path) -> None:
        self._require_model()
        import peft
        import transformers

        self._save_weights(path)
        write_json(
            path / META_FILE,
            {
                "format_version": FORMAT_VERSION,
                "kind": self.kind,
                "backbone": self.config.backbone,
                "args": self.args.to_dict(),
                "text_format": self.fmt.__dict__,
                "train_stats": {k: v for k, v in self.train_stats_.items() if k != "history"},
                "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
            },
        )

    @classmethod
    def _load(cls, path: Path, config: MemberConfig, context: MemberContext) -> FinetuneMember:
        if not (path / META_FILE).is_file():
            raise ArtifactError(f"{path} has no {META_FILE}")
        meta = read_json(path / META_FILE)
        check_format_version(meta, FORMAT_VERSION, path / META_FILE)
        member = cls(config, context)
        member._build(training=False)
        member._load_weights(path)
        member.model.eval()
        member.train_stats_ = dict(meta.get("train_stats", {}))
        return member

    def release(self) -> None:
        """Drop the model and free its accelerator memory (the member must be loaded again to predict).

        Cross-fitting holds one fold's model while the next one loads; releasing the finished
        fold first keeps two 7B models from sharing the card.
        """
        self.model = None
        self.tokenizer = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    # -- helpers -----------------------------------------------------------------------------------------

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        if self.args.normalise:
            texts = [normalise_tweet(text) for text in texts]
        return tokenize(self.tokenizer, texts, self.fmt)

    def _run(self, fn: Any, texts: list[str]) -> np.ndarray:
        self._require_model()
        with self._named_errors():
            return predict_outputs(
                fn,
                self._tokenize(texts),
                self.fmt,
                self.args.predict_batch_size,
                self.device,
                self.bf16,
                show_progress_bar=self.context.show_progress_bar,
            )

    @contextlib.contextmanager
    def _named_errors(self) -> Iterator[None]:
        """Prefix numerical failures with the member's name, so a multi-member run says which one diverged."""
        try:
            yield
        except NumericalError as exc:
            raise NumericalError(f"member '{self.config.name}': {exc}") from None

    def _require_model(self) -> None:
        if self.model is None:
            raise RuntimeError(f"member '{self.config.name}' is not fitted or loaded yet")

    def _split(self, data: TokenizedData) -> tuple[TokenizedData, TokenizedData | None]:
        if self.args.eval_fraction == 0.0:
            return data, None
        order = np.random.default_rng([self.seed, 1]).permutation(len(data))
        n_eval = max(1, round(self.args.eval_fraction * len(data)))
        if n_eval >= len(data):
            raise ValueError(f"eval_fraction {self.args.eval_fraction} leaves no training texts out of {len(data)}")
        return data.subset(np.sort(order[n_eval:])), data.subset(np.sort(order[:n_eval]))

    def _fingerprint(self, texts: list[str], labels: np.ndarray) -> str:
        digest = hashlib.sha256()
        for text in texts:
            digest.update(text.encode("utf-8") + b"\0")
        digest.update(np.ascontiguousarray(labels, dtype=np.float32).tobytes())
        args = {k: v for k, v in self.args.to_dict().items() if k not in _NOT_FINGERPRINTED}
        return stable_hash(
            {"kind": self.kind, "backbone": self.config.backbone, "args": args, "seed": self.seed, "data": digest.hexdigest()}
        )
