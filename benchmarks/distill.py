"""Distilled student vs plain sentence-transformers MiniLM, side by side in one process, as ratios.

    python -m benchmarks.distill --student artifacts/semeval/student-onnx [--student artifacts/semeval/student]

Measures, on the same tweets (the teacher run's eval or test split), alternating the two sides
so that drift of a shared machine's speed falls on both:

* batch throughput (tweets/s) of ``EmotionEnsemble.load(student).predict_proba`` vs
  ``SentenceTransformer.encode`` of MiniLM (target: student >= 1.25x plain);
* median single-tweet latency, one tweet per call (target: student <= 1.5x plain);
* the same over HTTP: ``python -m embedensemble.serve`` on the student in a child process, one
  ``POST /predict`` per tweet on a kept-alive connection, timed by the client (target: <= 2x plain
  in process);
* process start to first prediction, a fresh ``python -c`` loading the student and predicting
  one tweet, timed from outside (target: <= 5 s);
* quality from the student's ``<student>.distill.json`` (target: within 0.01 macro-F1 of its
  teacher on the held-out train rows and on the eval split).

Writes ``benchmarks/results/distill.json`` and renders the block between the markers of
``docs/distill.md``. The 1-minute load average is recorded before and after.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "distill.json"
DOC = ROOT / "docs" / "distill.md"
BEGIN, END = "<!-- distill-benchmark:begin -->", "<!-- distill-benchmark:end -->"
TARGETS = {
    "throughput_ratio_min": 1.25,
    "latency_ratio_max": 1.5,
    "http_latency_ratio_max": 2.0,
    "first_prediction_s_max": 5.0,
    "macro_f1_gap_max": 0.01,
}


def _throughput(fn: Callable[[list[str]], Any], texts: list[str]) -> float:
    started = time.perf_counter()
    fn(texts)
    return len(texts) / (time.perf_counter() - started)


def _latency_ms(fn: Callable[[list[str]], Any], texts: list[str]) -> float:
    times = []
    for text in texts:
        started = time.perf_counter()
        fn([text])
        times.append(1000 * (time.perf_counter() - started))
    return statistics.median(times)


def _first_prediction_s(student: Path, repeats: int) -> list[float]:
    script = f"from embedensemble.ensemble import EmotionEnsemble; EmotionEnsemble.load({str(student)!r}).predict(['what a day'])"
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", script], check=True, cwd=ROOT, capture_output=True)
        runs.append(time.perf_counter() - started)
    return runs


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def served(student: Path, max_batch: int, timeout: float = 120.0) -> Iterator[Callable[[list[str]], Any]]:
    """``python -m embedensemble.serve`` on ``student`` in a child process; yields ``texts -> response`` over one
    kept-alive HTTP connection (what a client that sends one tweet per request does)."""
    port = _free_port()
    command = [sys.executable, "-m", "embedensemble.serve", "--ensemble", str(student), "--port", str(port),
               "--max-batch", str(max_batch), "-q"]
    server = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        while True:  # the server answers /health once the student is loaded and warmed up
            if server.poll() is not None:
                raise RuntimeError(f"serve exited with {server.returncode}: {server.stderr.read().decode()[-2000:]}")
            try:
                probe = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                probe.request("GET", "/health")
                if probe.getresponse().status == 200:
                    probe.close()
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"serve did not answer /health within {timeout:.0f} s")
            time.sleep(0.2)
        connection = [http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)]

        def post(texts: list[str]) -> http.client.HTTPResponse:
            connection[0].request("POST", "/predict", body=json.dumps({"texts": texts}), headers={"Content-Type": "application/json"})
            return connection[0].getresponse()

        def predict(texts: list[str]) -> Any:
            try:
                response = post(texts)
            except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
                # uvicorn closes a connection idle for 5 s (while the other sides run): reconnect, as a client would
                connection[0].close()
                connection[0] = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
                response = post(texts)
            body = response.read()
            if response.status != 200:
                raise RuntimeError(f"POST /predict answered {response.status}: {body[:500]!r}")
            return json.loads(body)

        yield predict
        connection[0].close()
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


def _texts(student: Path, n: int) -> tuple[list[str], str]:
    from embedensemble.distill import student_of
    from embedensemble.run_data import load_run_data

    data = load_run_data(student_of(student)["run"])
    corpus, name = (data.eval, "eval") if data.eval is not None else (data.test, "test")
    return corpus.texts[:n], name


def measure(students: Sequence[Path], n: int, latency_n: int, rounds: int, start_repeats: int) -> dict[str, Any]:
    from sentence_transformers import SentenceTransformer

    from embedensemble.backbones import get_backbone_spec, resolve_weights
    from embedensemble.ensemble import EmotionEnsemble
    from embedensemble.fileio import read_json

    load_before = os.getloadavg()
    texts, split = _texts(students[0], n)
    plain = SentenceTransformer(str(resolve_weights(get_backbone_spec("minilm"))), device="cpu")
    encoders: dict[str, Callable[[list[str]], Any]] = {"plain MiniLM encode": lambda t: plain.encode(t, batch_size=32)}
    servers = contextlib.ExitStack()
    for student in students:
        ensemble = EmotionEnsemble.load(student)
        ensemble.predict_proba(texts[:8])  # loads the model (lazily, once)
        encoders[f"student {student.name}"] = ensemble.predict_proba
        encoders[f"HTTP {student.name}"] = servers.enter_context(served(student, max_batch=len(texts)))
    for fn in encoders.values():
        fn(texts[:8])
    throughput: dict[str, list[float]] = {name: [] for name in encoders}
    latency: dict[str, list[float]] = {name: [] for name in encoders}
    with servers:
        for _ in range(rounds):  # alternate the sides, so machine drift hits both
            for name, fn in encoders.items():
                throughput[name].append(_throughput(fn, texts))
                latency[name].append(_latency_ms(fn, texts[:latency_n]))
    plain_tps = statistics.median(throughput["plain MiniLM encode"])
    plain_ms = statistics.median(latency["plain MiniLM encode"])
    result: dict[str, Any] = {
        "tweets": {"n": len(texts), "split": split, "latency_n": min(latency_n, len(texts))},
        "rounds": rounds,
        "torch_threads": __import__("torch").get_num_threads(),
        "plain": {
            "tweets_per_s": plain_tps,
            "median_latency_ms": plain_ms,
            "runs_tweets_per_s": throughput["plain MiniLM encode"],
        },
        "students": {},
        "targets": TARGETS,
    }
    for student in students:
        name = f"student {student.name}"
        tps, ms = statistics.median(throughput[name]), statistics.median(latency[name])
        starts = _first_prediction_s(student, start_repeats)
        report = read_json(student.with_name(student.name + ".distill.json"))
        kind = read_json(student / "manifest.json")["members"][0]["config"]
        result["students"][student.name] = {
            "path": str(student),
            "kind": kind["kind"],
            "precision": kind.get("params", {}).get("precision", "fp32 (torch)"),
            "tweets_per_s": tps,
            "runs_tweets_per_s": throughput[name],
            "throughput_ratio": tps / plain_tps,
            "median_latency_ms": ms,
            "latency_ratio": ms / plain_ms,
            "http": {
                "tweets_per_s": statistics.median(throughput[f"HTTP {student.name}"]),
                "median_latency_ms": statistics.median(latency[f"HTTP {student.name}"]),
                "latency_ratio": statistics.median(latency[f"HTTP {student.name}"]) / plain_ms,
                "runs_median_latency_ms": latency[f"HTTP {student.name}"],
            },
            "first_prediction_s": statistics.median(starts),
            "first_prediction_runs_s": starts,
            "quality": report["quality"],
            "macro_f1_gap_teacher_minus_student": report["macro_f1_gap_teacher_minus_student"],
            "train": {k: report["student"][k] for k in ("train_seconds", "train_steps", "settings")},
            "soft_labels": report["soft_labels"],
            "onnx": report.get("onnx", {}),
        }
    result["loadavg_before"] = list(load_before)
    result["loadavg_after"] = list(os.getloadavg())
    result["cpus"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return result


def _verdict(entry: dict[str, Any]) -> dict[str, bool]:
    gaps = entry["macro_f1_gap_teacher_minus_student"]
    return {
        "throughput": entry["throughput_ratio"] >= TARGETS["throughput_ratio_min"],
        "latency": entry["latency_ratio"] <= TARGETS["latency_ratio_max"],
        **({"http_latency": entry["http"]["latency_ratio"] <= TARGETS["http_latency_ratio_max"]} if "http" in entry else {}),
        "first_prediction": entry["first_prediction_s"] <= TARGETS["first_prediction_s_max"],
        **{f"macro_f1_{split}": gap <= TARGETS["macro_f1_gap_max"] for split, gap in gaps.items()},
    }


def refit_summary(run_dir: Path) -> dict[str, Any]:
    """Eval macro-F1 of each member and the stack: K-fold average vs refitted on all rows (``metrics_full.json``)."""
    from embedensemble.run_folder import RunFolder

    run = RunFolder(run_dir)
    metrics = json.loads(run.full_metrics_file.read_text())
    summary: dict[str, Any] = {"run": str(run_dir), "models_per_prediction": metrics["models_per_prediction"]}
    if "eval" in metrics["stack"]:
        summary["eval_macro_f1"] = {
            "stack": {k: metrics["stack"]["eval"][k]["macro_f1"] for k in ("kfold", "full")},
            **{
                n: {"kfold": m["eval_kfold"]["macro_f1"], "full": m["eval_full"]["macro_f1"]}
                for n, m in metrics["members"].items()
            },
        }
    summary["label_agreement"] = {split: e["label_agreement"] for split, e in metrics["stack"].items()}
    return summary


def render(result: dict[str, Any]) -> str:
    """The markdown block of docs/distill.md (every number read from the result)."""
    plain = result["plain"]
    lines = [
        (
            f"Measured {result['measured']} on {result['cpus']} CPUs (1-min load average {result['loadavg_before'][0]:.1f} before, "
            f"{result['loadavg_after'][0]:.1f} after: a shared machine), {result['tweets']['n']} tweets of the teacher's "
            f"{result['tweets']['split']} split, {result['rounds']} alternating rounds (medians). "
            f"Plain `SentenceTransformer.encode` (MiniLM, batch 32): {plain['tweets_per_s']:.1f} tweets/s, "
            f"{plain['median_latency_ms']:.1f} ms per single tweet."
        ),
        "",
        (
            "| student | kind | tweets/s | vs plain | 1-tweet ms | vs plain | 1-tweet ms over HTTP | vs plain | "
            "start to 1st prediction | held-out macro-F1 (teacher / student) | eval macro-F1 (teacher / student) |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in result["students"].items():
        q = s["quality"]
        held = f"{q['holdout']['teacher']['macro_f1']:.4f} / {q['holdout']['student']['macro_f1']:.4f}"
        if "holdout_crossfit_thresholds" in q:
            fair = q["holdout_crossfit_thresholds"]
            held += f" (cross-fit thresholds: {fair['teacher']['macro_f1']:.4f} / {fair['student']['macro_f1']:.4f})"
        ev = f"{q['eval']['teacher']['macro_f1']:.4f} / {q['eval']['student']['macro_f1']:.4f}" if "eval" in q else "-"
        http = s.get("http")
        http_ms = f"{http['median_latency_ms']:.1f} | {http['latency_ratio']:.2f}x" if http else "not measured | -"
        lines.append(
            f"| `{name}` | {s['kind']} ({s['precision']}) | {s['tweets_per_s']:.1f} | {s['throughput_ratio']:.2f}x | "
            f"{s['median_latency_ms']:.1f} | {s['latency_ratio']:.2f}x | {http_ms} | "
            f"{s['first_prediction_s']:.2f} s | {held} | {ev} |"
        )
    lines.append("")
    t = result["targets"]
    lines.append(
        f"Targets: throughput >= {t['throughput_ratio_min']}x plain, single-tweet latency <= {t['latency_ratio_max']}x plain "
        f"in process and <= {t.get('http_latency_ratio_max', 2.0)}x plain over HTTP (`embedensemble.serve` in a child process, "
        "one `POST /predict` per tweet on a kept-alive connection, timed by the client), "
        f"first prediction <= {t['first_prediction_s_max']} s, macro-F1 within {t['macro_f1_gap_max']} of the teacher."
    )
    for name, s in result["students"].items():
        met = [k for k, ok in s["verdict"].items() if ok]
        missed = [k for k, ok in s["verdict"].items() if not ok]
        train = s["train"]
        lines.append(
            f"- `{name}`: met {', '.join(met) or 'none'}; missed {', '.join(missed) or 'none'}. Trained "
            f"{train['settings']['epochs']:g} epoch(s), {train['train_steps']} steps in {train['train_seconds'] / 60:.1f} min on "
            f"{sum(v for k, v in s['soft_labels'].items() if k in ('train_rows', 'test', 'unlabeled'))} soft-labelled tweets "
            f"({s['soft_labels']})."
        )
    refit = result.get("refit")
    if refit and "eval_macro_f1" in refit:
        lines += [
            "",
            f"Refit on all rows (`{refit['run']}`, eval macro-F1, K-fold average -> refitted, one model per member):",
            "",
        ]
        lines += ["| model | K-fold | refitted |", "|---|---|---|"]
        for name, f1 in refit["eval_macro_f1"].items():
            lines.append(f"| {name} | {f1['kfold']:.4f} | {f1['full']:.4f} |")
        agreement = ", ".join(f"{split} {100 * a:.1f}%" for split, a in refit["label_agreement"].items())
        lines += ["", f"Refitted and K-fold stacks decide the same labels on {agreement} of (tweet, emotion) pairs."]
    return "\n".join(lines)


def write_doc(block: str, doc: Path = DOC) -> None:
    text = doc.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{doc} lacks the markers {BEGIN} / {END}")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(f"{head}{BEGIN}\n{block}\n{END}{tail}", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.distill", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--student", type=Path, action="append", required=True, help="student folder(s) made by embedensemble.distill"
    )
    parser.add_argument("--n", type=int, default=500, help="tweets for the batch throughput")
    parser.add_argument("--latency-n", type=int, default=100, help="tweets predicted one at a time")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--start-repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--render-only", action="store_true", help="re-render docs/distill.md from --out")
    parser.add_argument("--doc", type=Path, default=DOC, help="markdown file whose marked block is rendered")
    parser.add_argument(
        "--refit-run", type=Path, help="a run refitted with embedensemble.refit: its metrics_full.json is reported too"
    )
    args = parser.parse_args(argv)
    if args.render_only:
        write_doc(render(json.loads(args.out.read_text())), args.doc)
        return 0
    result = measure(args.student, args.n, args.latency_n, args.rounds, args.start_repeats)
    result["measured"] = time.strftime("%Y-%m-%d", time.gmtime())
    for entry in result["students"].values():
        entry["verdict"] = _verdict(entry)
    if args.refit_run:
        result["refit"] = refit_summary(args.refit_run)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    write_doc(render(result), args.doc)
    print(render(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
