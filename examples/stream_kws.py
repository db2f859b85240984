"""Keyword spotting on a continuous stream, frame by frame on the emulated Cortex-M7.

    python examples/stream_kws.py                          # 60 s, kws-dscnn (streamed) and kws-gru, int8
    python examples/stream_kws.py --seconds 30 --models kws-dscnn --seed 3

A 60-second recording is synthesised (edgekit.speech.make_stream: keywords and other words said at random times by
voices the models never heard, in background noise) with its script. Each model is compiled for cortex-m7 as a
streaming step program (kws-dscnn with --streaming: per-layer caches; kws-gru: a recurrent step), and the firmware
runs the whole stream on QEMU, one 20 ms MFCC frame per step from one reset, printing its output after every frame
(edgekit.runtimes.mcu.stream). A keyword is detected when its softmax probability stays above --threshold for
--hold consecutive outputs; detections closer than --refractory seconds are merged. A detection is a true positive
when that keyword began at most 1.5 s before it (the models' 1-s window and latency), else a false
positive. The duty cycle
is the firmware's measured instructions per second of audio over the M7's clock (one instruction per cycle).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from edgekit import api, speech
from edgekit.runtimes import mcu

FRAME_S = speech.HOP_SAMPLES / speech.SAMPLE_RATE  # 20 ms between frames


def detect(probs: np.ndarray, times: np.ndarray, threshold: float, hold: int, refractory_s: float) -> list:
    """(time, keyword, probability) where a keyword's probability stays >= threshold for ``hold`` outputs."""
    out, run, last_t = [], {}, -1e9
    for p, t in zip(probs, times):
        k = int(p.argmax())
        for c in list(run):
            if c != k:
                run.pop(c)
        if speech.CLASSES[k] in speech.KEYWORDS and p[k] >= threshold:
            run[k] = run.get(k, 0) + 1
            if run[k] == hold and t - last_t >= refractory_s:
                out.append((float(t), speech.CLASSES[k], float(p[k])))
                last_t = t
        else:
            run.pop(k, None)
    return out


def score(detections: list, script: list, window_s: float = 1.0) -> tuple[list, int, int, int]:
    """Each detection marked TP (the same keyword began at most ``window_s`` + 0.5 s before it — the models' window
    and their latency — and was not already found) or FP; returns (rows, TP, FP, missed keywords)."""
    found, rows = set(), []
    for t, word, p in detections:
        hit = next((i for i, w in enumerate(script) if w.word == word and i not in found
                    and w.start_s <= t <= w.start_s + window_s + 0.5), None)
        if hit is not None:
            found.add(hit)
        rows.append((t, word, p, "TP" if hit is not None else "FP"))
    keywords = [i for i, w in enumerate(script) if w.is_keyword]
    tp = sum(1 for r in rows if r[3] == "TP")
    return rows, tp, len(rows) - tp, len([i for i in keywords if i not in found])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--models", nargs="+", default=["kws-dscnn", "kws-gru"])
    ap.add_argument("--quantize", default="int8", help="int8 or none (float32)")
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--hold", type=int, default=2, help="consecutive outputs above the threshold")
    ap.add_argument("--refractory", type=float, default=0.8, help="seconds between two detections")
    args = ap.parse_args(argv)

    wave, script = speech.make_stream(args.seconds, args.seed)
    frames = speech.stream_features(wave)
    said = [w for w in script if w.is_keyword]
    print(f"stream: {args.seconds:g} s, {len(frames)} frames, {len(script)} words said ({len(said)} keywords): "
          + ", ".join(f"{w.word}@{w.end_s:.1f}s" for w in script))
    with tempfile.TemporaryDirectory(prefix="ek-stream-demo-") as tmp:
        for name in args.models:
            out = Path(tmp) / name
            api.compile(name, "cortex-m7", out, quantize=None if args.quantize == "none" else args.quantize,
                        streaming=True)
            conv = name != "kws-gru" and name != "kws-lmu"
            run = mcu.stream(out, frames[:, None, :] if conv else frames)
            logits = run["outputs"]
            probs = np.exp(logits - logits.max(-1, keepdims=True))
            probs /= probs.sum(-1, keepdims=True)
            times = (np.arange(len(frames)) * speech.HOP_SAMPLES + speech.FRAME_SAMPLES) / speech.SAMPLE_RATE
            # the conv stream outputs on every second frame (its time stride); its other steps repeat the last output
            rows, tp, fp, missed = score(detect(probs, times, args.threshold, args.hold, args.refractory), script)
            per_s = run["instructions"].mean() / FRAME_S
            print(f"\n{name} on the emulated cortex-m7 ({args.quantize}): {run['instructions'].mean():,.0f} "
                  f"instructions per frame (max {run['instructions'].max():,}), duty cycle "
                  f"{per_s / run['clock_hz']:.2%} of {run['clock_hz'] / 1e6:g} MHz")
            for t, word, p, verdict in rows:
                print(f"  {t:6.2f} s  {word:6s} p={p:.2f}  {verdict}")
            print(f"  true positives {tp}/{len(said)}, false positives {fp}, missed {missed} "
                  f"({fp / (args.seconds / 3600):.0f} false alarms per hour)")


if __name__ == "__main__":
    main()
