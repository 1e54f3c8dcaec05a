"""GPU check (issue 12): the library against the plain reference, both at full depth, one run, one card.

Runs ``plain_reference.py`` (transformers + peft + bitsandbytes, the yardstick; run as it is, in
its own process, first) and then the library's paths on the same random-weight Mistral of the
7B shape at ``--layers`` (default 32, measured directly) with the same tweet-length workload:

* frozen bf16 embedding: ``Encoder`` padded (the unoptimised path), packed, packed + compiled
  layers; the packed vectors are compared with the padded ones (cosine);
* QLoRA training with the ``pooled-finetune`` member (NF4 + double quant, LoRA r16 on every
  projection, linear head, BCE), one fresh member per ``--train`` setting ``<batch>[p][gc]``
  (``p`` = packing, ``gc`` = gradient checkpointing); padded and packed at the same batch are
  compared step by step (loss curves).

Both sides, card and versions go into one JSON (written after every stage, so a run cut short
still leaves what it measured); ``python -m benchmarks.readme`` renders the ratios from it
(:mod:`benchmarks.gpu.report`). LoRA dropout is 0 on the library side (``--lora-dropout``) so
that padded and packed runs draw no different dropout masks; the reference keeps its 0.05.

On the GPU machine (H100/H200; it reaches no package index, so bitsandbytes travels as a wheel
with the reference in the git-ignored folder ``.gpu-carry``, made here by
``bash benchmarks/gpu/prepare_carry.sh``; about 42 MB), as one device ``run`` with
``carry=[".gpu-carry"]`` and ``timeout_s=600``::

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu-carry/*.whl \\
      && export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 \\
      && python3 -m benchmarks.gpu_check --layers 32 --out $OUT/gpu_check_h200.json 2>&1 | tee $OUT/gpu_check.log

then copy the JSON to ``benchmarks/results/gpu_check_<card>.json`` and run ``python -m benchmarks.readme``.
CPU dry run of the whole thing (numbers mean nothing): ``python -m benchmarks.gpu_check --tiny --out /tmp/g.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.gpu import library, workload
from benchmarks.gpu.report import FORMAT, targets
from embedensemble._logging import get_logger
from embedensemble.fileio import write_json

logger = get_logger("benchmarks.gpu_check")
ROOT = Path(__file__).resolve().parents[1]
REFERENCE_CANDIDATES = (
    ROOT / ".gpu-carry" / "plain_reference.py",
    ROOT / "shared" / "gpu-reference" / "plain_reference.py",
    ROOT.parent / "shared" / "gpu-reference" / "plain_reference.py",
)
EMBED_SETTINGS = ("padded", "packed", "packed_compiled")


def find_reference(given: str | None) -> Path | None:
    """``--reference``, else ``$EMBEDENSEMBLE_GPU_REFERENCE``, else the first of :data:`REFERENCE_CANDIDATES` that exists."""
    for candidate in (given, os.environ.get("EMBEDENSEMBLE_GPU_REFERENCE"), *REFERENCE_CANDIDATES):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def run_reference(script: Path | None, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """The reference's own JSON plus its command line and wall time, or ``{"missing": why}``."""
    if script is None:
        return {"missing": "plain_reference.py not found (pass --reference)"}
    out = workdir / "reference.json"
    command = [sys.executable, str(script), "--layers", str(args.layers), "--lora-r", str(args.lora_r), "--out", str(out)]
    command += ["--tiny"] if args.tiny else []
    start = time.perf_counter()
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=args.reference_timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"missing": f"timed out after {args.reference_timeout} s", "command": command}
    seconds = time.perf_counter() - start
    if proc.returncode != 0 or not out.is_file():
        return {"missing": f"exit code {proc.returncode}: {proc.stderr.strip()[-1500:]}", "command": command}
    return {**json.loads(out.read_text(encoding="utf-8")), "script": str(script), "wall_seconds": seconds}


def card_and_versions(device: str) -> tuple[str, dict[str, Any], dict[str, str]]:
    import importlib.metadata as md

    import torch

    versions = {"python": platform.python_version()}
    for name in ("torch", "transformers", "peft", "bitsandbytes"):
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            versions[name] = "missing"
    if not device.startswith("cuda"):
        return platform.processor() or "cpu", {"kind": "cpu"}, versions
    props = torch.cuda.get_device_properties(0)
    card = {"name": props.name, "memory_GiB": props.total_memory / 2**30, "capability": f"{props.major}.{props.minor}",
            "multiprocessors": props.multi_processor_count, "cuda": torch.version.cuda}
    return props.name, card, versions


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=None, help="decoder layers (default 32; --tiny: 2)")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes on the CPU: a dry run of every code path")
    parser.add_argument("--reference", default=None, help="path of plain_reference.py (default: found beside the repo)")
    parser.add_argument("--no-reference", action="store_true", help="measure the library side only")
    parser.add_argument("--reference-timeout", type=int, default=330, help="seconds before the reference is given up")
    parser.add_argument("--n-embed", type=int, default=None, help="tweets to embed (default 4096, as the reference; --tiny: 64)")
    parser.add_argument("--embed-batch", type=int, default=256, help="texts per forward pass (packed: their average tokens)")
    parser.add_argument("--embed", default=None, help=f"embedding settings from {list(EMBED_SETTINGS)} (default all; --tiny: no compiling)")
    parser.add_argument("--train", default=None, help="training settings <batch>[p][gc], comma-separated (default 32,32p,128p,256pgc; --tiny: 32,32p,8pgc)")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per setting (default 12, as the reference; --tiny: 4)")
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--lora-dropout", type=float, default=0.0)
    parser.add_argument("--budget-s", type=float, default=540.0, help="skip the settings not started after this many seconds")
    parser.add_argument("--workdir", type=Path, default=None, help="where the model is saved (default /dev/shm when on CUDA)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON report here")
    args = parser.parse_args(argv)
    args.layers = args.layers or (2 if args.tiny else 32)
    args.n_embed = args.n_embed or (64 if args.tiny else 4096)
    args.steps = args.steps or (4 if args.tiny else 12)
    args.embed = args.embed or ",".join(EMBED_SETTINGS[:2] if args.tiny else EMBED_SETTINGS)  # compiling on a CPU takes minutes
    args.train = args.train or ("32,32p,8pgc" if args.tiny else "32,32p,128p,256pgc")
    unknown = set(args.embed.split(",")) - set(EMBED_SETTINGS)
    if unknown:
        parser.error(f"--embed: unknown setting(s) {sorted(unknown)}")
    try:
        args.train_settings = [library.parse_train_setting(t) for t in args.train.split(",") if t.strip()]
    except ValueError as exc:
        parser.error(str(exc))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import torch

    if not args.tiny and not torch.cuda.is_available():
        print("no CUDA device: the GPU check needs one (--tiny runs a CPU dry run)", file=sys.stderr)
        return 2
    device = "cpu" if args.tiny else "cuda"
    name, card, versions = card_and_versions(device)
    start = time.perf_counter()
    report: dict[str, Any] = {
        "format": FORMAT, "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv), "device": name, "card": card,
        "versions": versions, "layers": args.layers, "shape": workload.SHAPES["tiny" if args.tiny else "7b"], "complete": False,
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "workdir", "train_settings")},
    }

    def save(stage: str) -> None:
        report["wall_seconds"] = time.perf_counter() - start
        logger.warning("%s done after %.0f s", stage, report["wall_seconds"])
        if args.out:
            write_json(args.out, report)

    shm = Path("/dev/shm")
    # The saved bf16 model (14 GiB at 32 layers) is read once per setting: from RAM when there is room.
    roomy = shm.is_dir() and shutil.disk_usage(shm).free > 3 * 2**30 * args.layers / 4
    parent = args.workdir or (shm if device == "cuda" and roomy else None)
    with tempfile.TemporaryDirectory(prefix="gpu_check_", dir=parent) as tmp:
        tmp_path = Path(tmp)
        script = None if args.no_reference else find_reference(args.reference)
        report["reference"] = {"missing": "--no-reference"} if args.no_reference else run_reference(script, args, tmp_path)
        save("reference")
        measure_library(args, device, tmp_path, report, start, save)
    report["complete"] = True
    report["targets"] = targets(report)  # a convenience copy: the README recomputes from the measurements
    save("all")
    sys.stdout.write(json.dumps(report, sort_keys=True) + "\n")
    return 0


def measure_library(args: argparse.Namespace, device: str, tmp: Path, report: dict[str, Any], start: float, save: Any) -> None:
    lengths = workload.tweet_lengths(max(args.n_embed, max(s["batch"] for s in args.train_settings) * args.steps))
    texts, labels = workload.synthetic_tweets(lengths)
    report["workload"] = {"lengths": workload.LENGTHS, "n_embed": args.n_embed, "mean_tokens": float(lengths[: args.n_embed].mean())}
    lib: dict[str, Any] = {"embed": {}, "embed_equivalence": {}, "train": {}, "train_equivalence": {}, "skipped": []}
    report["library"] = lib
    folder = tmp / "mistral"
    workload.build_mistral(folder, "tiny" if args.tiny else "7b", args.layers, device)
    save("model build")
    vectors: dict[str, Any] = {}
    for setting in args.embed.split(","):
        if time.perf_counter() - start > args.budget_s:
            lib["skipped"].append(f"embed {setting}: time budget")
            continue
        row, vectors[setting] = library.frozen(folder, texts[: args.n_embed], device, args.embed_batch, packing=setting != "padded",
                                               compile_layers=setting == "packed_compiled", cache_root=tmp)
        lib["embed"][setting] = row
        if setting != "padded" and "padded" in vectors:
            lib["embed_equivalence"][f"{setting}_vs_padded"] = library.cosine_stats(vectors[setting], vectors["padded"])
        save(f"embed {setting}")
    del vectors
    for setting in args.train_settings:
        name = library.setting_name(setting)
        if time.perf_counter() - start > args.budget_s:
            lib["skipped"].append(f"train {name}: time budget")
            continue
        try:
            lib["train"][name] = library.finetune(folder, texts, labels, device, setting, steps=args.steps, lora_r=args.lora_r,
                                                  lora_dropout=args.lora_dropout)
        except torch_oom() as exc:  # a setting that does not fit is a result, not a crash
            lib["skipped"].append(f"train {name}: out of memory ({str(exc).splitlines()[0][:200]})")
            library._free(True)
        twin = library.setting_name({**setting, "packing": not setting["packing"]})
        if name in lib["train"] and twin in lib["train"]:
            packed, padded = (name, twin) if setting["packing"] else (twin, name)
            lib["train_equivalence"][f"{packed}_vs_{padded}"] = library.loss_curve_diff(lib["train"][packed]["losses"],
                                                                                         lib["train"][padded]["losses"])
        save(f"train {name}")


def torch_oom() -> type[BaseException]:
    import torch

    return torch.OutOfMemoryError


if __name__ == "__main__":
    raise SystemExit(main())
