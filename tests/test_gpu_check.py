"""GPU check (issue 12) on CPU: packing gives the padded path's numbers, and the one-command check
(both sides, one JSON) runs end to end with tiny shapes and renders its ratios in the README block."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic import make_tweets
from tiny_models import make_tiny_decoder

from embedensemble.backbones.packing import SLACK_SEGMENT, embed_packed, pack, pack_rows
from embedensemble.backbones.tokens import TextFormat, collate, pool
from embedensemble.config import MemberConfig
from embedensemble.members.base import MemberContext, build_member

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT.parent / "shared" / "gpu-reference" / "plain_reference.py"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _tiny_mistral(attn: str):
    from transformers import MistralConfig, MistralModel

    config = MistralConfig(
        hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
        num_hidden_layers=2, vocab_size=300, max_position_embeddings=512,
    )
    config._attn_implementation = attn
    torch.manual_seed(0)
    return MistralModel(config).eval()


def _random_ids(n: int, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(3, 300, size=int(k)).tolist() for k in rng.integers(2, 60, size=n)]


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_pack_rows_place_every_text_once_within_the_width():
    lengths = [5, 120, 30, 31, 64, 64, 1, 127, 90]
    rows = pack_rows(lengths, 128)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 128 for row in rows)
    assert len(rows) == 5  # sum 532 -> at least 5 rows of 128; best-fit decreasing reaches it
    with pytest.raises(ValueError, match="does not fit"):
        pack_rows([129], 128)


def test_pack_layout_positions_segments_and_last_index():
    ids = [[7, 8, 9], [4], [5, 6]]
    batch = pack(ids, pad_id=0, width=4)
    flat = batch["input_ids"].flatten()
    for i, row in enumerate(ids):
        assert int(flat[batch["last_index"][i]]) == row[-1]
        assert int(batch["position_ids"].flatten()[batch["last_index"][i]]) == len(row) - 1
    assert int(batch["attention_mask"].sum()) == 6 and batch["input_ids"].shape == (2, 4)
    assert (batch["segment_ids"][batch["attention_mask"] == 0] == SLACK_SEGMENT).all()


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_embedding_equals_padded(attn):
    model = _tiny_mistral(attn)
    ids = _random_ids(40)
    packed = embed_packed(model, ids, pad_id=0, batch_size=8, width=64)
    with torch.no_grad():
        padded_batch = collate(ids, TextFormat(max_length=max(map(len, ids)), padding_side="left", pad_token_id=0))
        input_ids, mask = padded_batch["input_ids"], padded_batch["attention_mask"]
        hidden = model(input_ids=input_ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)).last_hidden_state
        padded = pool(hidden, mask, "last_token").numpy()
    assert packed.shape == padded.shape
    assert _cosine(packed, padded).min() > 0.999
    np.testing.assert_allclose(packed, padded, atol=1e-4)


def test_encoder_packing_option_matches_and_keys_the_cache(tmp_path):
    from embedensemble.backbones import Encoder, get_backbone_spec

    folder = make_tiny_decoder(tmp_path / "mistral", "mistral", with_pad_token=False)
    spec = get_backbone_spec(str(folder), normalize=False)
    texts, _ = make_tweets(24, seed=3)
    plain = Encoder(spec, device="cpu", batch_size=8, cache_root=tmp_path)
    packed = Encoder(spec, device="cpu", batch_size=8, cache_root=tmp_path, packing=True)
    assert _cosine(plain.encode(texts), packed.encode(texts)).min() > 0.999
    assert plain.identity != packed.identity  # rounding differs: cached vectors of one are not served for the other


def _fit(folder: Path, texts, labels, **params):
    base = {"batch_size": 8, "max_steps": 4, "lr": 5e-3, "warmup_ratio": 0.0, "lora_dropout": 0.0, "save_every_steps": 1000,
            "predict_batch_size": 8, "lora_r": 4}
    config = MemberConfig(name="m", kind="pooled-finetune", backbone=str(folder), params={**base, **params})
    return build_member(config, MemberContext(seed=3, device="cpu")).fit(texts, labels)


@pytest.mark.parametrize("quantize_4bit", [False, True])
def test_packed_finetuning_gives_the_padded_loss_curve_and_embeddings(tmp_path, quantize_4bit):
    if quantize_4bit:
        pytest.importorskip("bitsandbytes")
    folder = make_tiny_decoder(tmp_path / "mistral", "mistral", with_pad_token=False)
    texts, labels = make_tweets(32, seed=5)
    labels = labels.astype(np.float32)
    padded = _fit(folder, texts, labels, quantize_4bit=quantize_4bit)
    packed = _fit(folder, texts, labels, quantize_4bit=quantize_4bit, packing=True)
    assert packed.fmt.packing and not padded.fmt.packing
    loss_padded = [h["loss"] for h in padded.train_stats_["history"]]
    loss_packed = [h["loss"] for h in packed.train_stats_["history"]]
    np.testing.assert_allclose(loss_packed, loss_padded, rtol=1e-4)
    assert loss_packed[-1] != loss_packed[0]  # the weights moved: the comparison covers updates, not only the start
    assert packed.train_stats_["padding_fraction"] < padded.train_stats_["padding_fraction"]
    assert _cosine(packed.embed(texts), padded.embed(texts)).min() > 0.999
    np.testing.assert_allclose(packed.predict_proba(texts), padded.predict_proba(texts), atol=1e-4)


def test_packing_is_rejected_for_sequence_classifiers(tmp_path):
    from embedensemble.errors import ConfigError
    from embedensemble.finetune import FinetuneArgs

    with pytest.raises(ConfigError, match="'packing'"):
        FinetuneArgs.from_params({"packing": True}, kind="seqcls-finetune", where="member 'x'")


# -- the one-command check and its README rendering -------------------------------------------------


def _report(reference: dict | None) -> dict:
    """A format-2 report with made-up figures (a rendering fixture, not a measurement)."""
    return {
        "format": 2, "date": "2000-01-01", "device": "Test Card", "card": {"name": "Test Card"}, "layers": 32,
        "versions": {"torch": "x"}, "workload": {"lengths": "test"}, "reference": reference,
        "library": {
            "embed": {"padded": {"batch": 256, "packing": False, "tweets_per_s": 500.0, "peak_GiB": 20.0, "finite": True},
                      "packed": {"batch": 256, "packing": True, "tweets_per_s": 1200.0, "peak_GiB": 19.0, "finite": True}},
            "embed_equivalence": {"packed_vs_padded": {"min_cosine": 0.995, "mean_cosine": 0.999}},
            "train": {"b32_padded": {"batch": 32, "packing": False, "gradient_checkpointing": False, "lora_r": 16,
                                     "tweets_per_s": 150.0, "peak_GiB": 50.0, "finite": True},
                      "b32_packed": {"batch": 32, "packing": True, "gradient_checkpointing": False, "lora_r": 16,
                                     "tweets_per_s": 300.0, "peak_GiB": 30.0, "finite": True},
                      "b256_packed": {"batch": 256, "packing": True, "gradient_checkpointing": False, "lora_r": 16,
                                      "tweets_per_s": 900.0, "peak_GiB": 90.0, "finite": True}},
            "train_equivalence": {"b32_packed_vs_b32_padded": {"max_abs_diff": 0.001, "max_rel_diff": 0.003, "steps": 12}},
        },
    }


def test_render_computes_ratios_from_both_sides_and_says_not_measured_without_a_reference():
    from benchmarks.gpu.report import render, targets

    reference = {"embed_bf16": {"batch": 256, "tweets_per_s": 600.0}, "qlora_train": {"batch": 32, "tweets_per_s": 120.0, "peak_GiB": 58.7}}
    text = "\n".join(render(_report(reference)))
    assert "| 1200 | 600 | 2.00× |" in text and "| 300 | 120 | 2.50× |" in text
    by_what = {t["what"].split(" ≥")[0].split(" (")[0]: t for t in targets(_report(reference))}
    assert by_what["frozen bf16 embedding"]["met"] is True and by_what["frozen bf16 embedding"]["setting"] == "packed"
    at_batch = by_what["QLoRA training at the reference's batch"]
    assert at_batch["setting"] == "b32_packed" and at_batch["value"] == "2.50×" and at_batch["met"] is True
    assert by_what["best QLoRA batch/checkpointing setting"]["setting"] == "b32_packed"  # b256 is over 80 GB
    missing = "\n".join(render(_report({"missing": "exit code 1: no bitsandbytes"})))
    runs = [line.split(" | ") for line in missing.splitlines() if line.startswith(("| frozen bf16 embedding,", "| QLoRA r"))]
    assert len(runs) == 5 and all(cells[3] == "not measured" and cells[4] == "not measured" for cells in runs)
    assert "not measured (exit code 1: no bitsandbytes)" in missing
    assert "| frozen bf16 embedding ≥ 1.5× reference | `packed` | not measured | not measured |" in missing


@pytest.mark.slow
def test_gpu_check_tiny_dry_run_writes_both_sides_and_renders_in_the_readme(tmp_path):
    pytest.importorskip("bitsandbytes")
    out = tmp_path / "results" / "gpu_check_cpu.json"
    reference = REFERENCE if REFERENCE.is_file() else None
    command = [sys.executable, "-m", "benchmarks.gpu_check", "--tiny", "--n-embed", "32", "--train", "32,32p", "--out", str(out)]
    command += ["--reference", str(reference)] if reference else ["--no-reference"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == report
    assert report["format"] == 2 and report["complete"] and report["layers"] == 2
    assert {"torch", "transformers", "peft", "bitsandbytes"} <= set(report["versions"])
    lib = report["library"]
    assert set(lib["embed"]) == {"padded", "packed"} and set(lib["train"]) == {"b32_padded", "b32_packed"}
    assert lib["embed_equivalence"]["packed_vs_padded"]["min_cosine"] > 0.999
    assert lib["train_equivalence"]["b32_packed_vs_b32_padded"]["max_rel_diff"] < 1e-4
    assert lib["train"]["b32_packed"]["padding_fraction"] < lib["train"]["b32_padded"]["padding_fraction"]
    for row in [*lib["embed"].values(), *lib["train"].values()]:
        assert row["tweets_per_s"] > 0 and row["finite"]

    from benchmarks.readme import render

    text = render(out.parent)
    assert "### GPU check" in text and "CPU dry run" in text
    if reference:
        assert report["reference"]["qlora_train"]["batch"] == 32
        expected = lib["embed"]["packed"]["tweets_per_s"] / report["reference"]["embed_bf16"]["tweets_per_s"]
        assert f"| {expected:.2f}× |" in text
    # Without its reference side the same report renders "not measured" where the ratios were.
    report["reference"] = {"missing": "removed by the test"}
    out.write_text(json.dumps(report))
    text = render(out.parent)
    assert "Reference side: not measured (removed by the test)" in text
    assert "| padded" not in text and "library / reference" in text
    rows = [line for line in text.splitlines() if line.startswith("| frozen bf16 embedding, ")]
    assert rows and all(line.split(" | ")[4] == "not measured" for line in rows)
