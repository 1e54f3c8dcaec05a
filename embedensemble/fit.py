"""``python -m embedensemble.fit``: cross-fit the members of a config and write the run folder."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from ._cli import add_verbosity, apply_verbosity, member_list, run_cli
from ._logging import get_logger
from .config import EnsembleConfig
from .data import DATA_ENV, load_dataset
from .defaults import default_config
from .errors import ConfigError
from .fitting import fit_members
from .stacking import stack_and_print

logger = get_logger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m embedensemble.fit",
        description="Cross-fit every member of an ensemble config; writes out-of-fold and test probabilities "
        "into a run folder. Then run `python -m embedensemble.stack --run DIR` (or pass --stack).",
    )
    parser.add_argument("--config", type=Path, help="JSON config (see experiments/); default: the built-in CPU config")
    parser.add_argument("--data", type=Path, help=f"data folder (Kaggle or SemEval-2018 E-c files); default ${DATA_ENV} or ../shared/data/kaggle-emotion")
    parser.add_argument("--eval", type=Path, dest="eval_path", help="labelled evaluation file (default: the SemEval dev file when present)")
    parser.add_argument("--run", "--run-dir", dest="run", type=Path, help="run folder (default: artifacts/<config name>); --run-dir under torchrun, whose own parser takes --run for --run-path")
    parser.add_argument("--members", help="comma-separated subset of the config's members to fit")
    parser.add_argument("--folds", type=int, help="override cv.n_folds")
    parser.add_argument("--seed", type=int, help="override the seed (folds and models)")
    parser.add_argument("--cache-dir", help="embedding/weights cache (default $EMBEDENSEMBLE_CACHE or ~/.cache/embedensemble)")
    parser.add_argument("--device", help="torch device for backbones, e.g. cpu or cuda")
    parser.add_argument("--stack", action="store_true", help="stack the run right after fitting")
    parser.add_argument("--engine", choices=("local", "ray"), default="local", help="local (this process) or ray (folds and members as Ray tasks; pip install embedensemble[ray])")
    parser.add_argument("--address", help="Ray cluster address (--engine ray; default: start Ray locally)")
    parser.add_argument("--num-workers", type=int, help="Ray tasks at once (--engine ray; default: the cluster's CPUs)")
    add_verbosity(parser)
    return parser


def resolve_config(args: argparse.Namespace) -> EnsembleConfig:
    config = EnsembleConfig.load(args.config) if args.config else default_config()
    data = config.to_dict()
    if args.members:
        wanted = member_list(args.members)
        unknown = sorted(set(wanted) - {m["name"] for m in data["members"]})
        if unknown:
            raise ConfigError(f"--members: unknown member(s) {unknown}; the config has {[m['name'] for m in data['members']]}")
        data["members"] = [m for m in data["members"] if m["name"] in wanted]
    if args.folds is not None:
        data["cv"]["n_folds"] = args.folds
    if args.seed is not None:
        data["seed"] = data["cv"]["seed"] = args.seed
    if args.cache_dir:
        data["cache_dir"] = args.cache_dir
    if args.device:
        data["device"] = args.device
    return EnsembleConfig.from_dict(data, where=str(args.config or "default config"))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    apply_verbosity(args)
    config = resolve_config(args)
    if not config.members:
        raise ConfigError("the config has no members")
    splits = load_dataset(args.data, eval_path=args.eval_path)
    run_dir = args.run or Path("artifacts") / config.name
    info = {"data_dir": str(Path(splits.files["train"]).parent.resolve()), "data_kind": splits.kind, "files": splits.files}
    info["eval_overlap"] = splits.overlap.get("eval")  # eval rows that are train tweets, excluded by load_dataset
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # torchrun: one fine-tune on several GPUs (finetune/parallel.py)
        from .finetune.parallel import rank_run_dir

        run_dir = rank_run_dir(run_dir)
    if args.engine == "ray":
        from .distributed.ray_fit import fit_members_ray

        fit_members_ray(config, splits.train, run_dir, test=splits.test, eval=splits.eval, data_info=info, address=args.address, num_workers=args.num_workers)
    elif args.address or args.num_workers:
        raise ConfigError("--address and --num-workers apply to --engine ray only")
    else:
        fit_members(config, splits.train, run_dir, test=splits.test, eval=splits.eval, data_info=info)
    print(f"fitted {len(config.members)} member(s) into {run_dir}")
    if args.stack:
        stack_and_print(run_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
