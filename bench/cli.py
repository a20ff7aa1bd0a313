"""``vocex-bench``: what vocex achieves on this machine.

    vocex-bench compute --json bench/results/compute.json --plot
    vocex-bench latency --json bench/results/latency.json
    vocex-bench soak --minutes 10 --json bench/results/soak.json

Each subcommand prints a table and writes its JSON (``--json``); ``--plot`` writes PNGs
beside it.  Without JACK (jackd2 + JACK-Client) the device measurements are skipped with a
message; without a GPU the CUDA rows are left out.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from vocex.model.backends import ModelError, resolve_model
from vocex.model.cli import EXIT_DEVICE, EXIT_INPUT, EXIT_MODEL, EXIT_OK, EXIT_OUTPUT, fail
from vocex.model.files import atomic_path

PROG = "vocex-bench"
DEFAULT_SETTINGS = "48000:2:3,48000:4:0,48000:1:0,44100:2:3"


def _machine() -> dict[str, Any]:
    import os

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S")}


def _write(path: Path | None, report: dict[str, Any]) -> None:
    if path is None:
        return
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}", file=sys.stderr)


def _settings(text: str) -> list[dict[str, int]]:
    out = []
    for item in text.split(","):
        rate, k, lookahead = (int(v) for v in item.split(":"))
        out.append({"rate": rate, "K": k, "L": lookahead})
    return out


def _jack_missing() -> str | None:
    if shutil.which("jackd") is None:
        return "jackd not installed (apt-get install jackd2)"
    try:
        import jack  # noqa: F401
    except (ImportError, OSError) as exc:
        return f"JACK-Client not usable ({exc})"
    return None


def _live_model(spec: str | None):
    from vocex.realtime.live import live_model_path

    return resolve_model(spec or live_model_path())


def cmd_compute(args: argparse.Namespace) -> int:
    from vocex.bench import compute

    files = _live_model(args.model)
    report = compute.run(files, [int(k) for k in args.hop_batches.split(",")],
                         [int(c) for c in args.channels.split(",")], args.iterations)
    report["machine"] = _machine()
    print(compute.table(report))
    _write(args.json, report)
    if args.plot and args.json:
        compute.plot(report, args.json.with_suffix(".png"))
    return EXIT_OK


def cmd_latency(args: argparse.Namespace) -> int:
    from vocex.bench import latency

    files = _live_model(args.model)
    settings = _settings(args.settings)
    report: dict[str, Any] = {"model": str(files.card_path), "machine": _machine(),
                              "algorithmic": latency.algorithmic(files, settings), "measured": []}
    missing = _jack_missing()
    if missing:
        report["skipped"] = f"end-to-end measurement skipped: {missing}"
        print(report["skipped"], file=sys.stderr)
    else:
        for s in settings:
            for block in (int(b) for b in args.blocks.split(",")):
                row = latency.measure(files, s, block)
                report["measured"].append(row)
                print(f"  {s} block {block}: reported {row['reported_ms']} ms, measured {row['measured_ms']} ms",
                      file=sys.stderr)
    print(latency.table(report))
    _write(args.json, report)
    return EXIT_OK


def cmd_soak(args: argparse.Namespace) -> int:
    from vocex.bench import soak
    from vocex.model.audio import AudioError, load_audio

    missing = _jack_missing()
    if missing:
        return fail(PROG, f"soak needs a JACK server: {missing}", EXIT_DEVICE)
    try:
        song = load_audio(args.song, args.samplerate)
    except AudioError as exc:
        return fail(PROG, exc, EXIT_INPUT)
    if song.shape[1] == 1:
        song = song.repeat(2, axis=1)
    report = soak.run(song[:, :2], args.minutes, args.model, args.samplerate, args.blocksize)
    report.update({"song": str(args.song), "machine": _machine()})
    print(soak.table(report))
    _write(args.json, report)
    if args.plot and args.json:
        _plot_soak(report, args.json.with_suffix(".png"))
    return EXIT_OK


def _plot_soak(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t, m = zip(*report["rss_samples"])
    fig, ax = plt.subplots(figsize=(8, 3), constrained_layout=True)
    ax.plot([x / 60 for x in t], m)
    ax.set_xlabel("minutes")
    ax.set_ylabel("RSS (MiB)")
    ax.set_title(f"vocex-live soak: xruns {report['xruns']}, late blocks {report['late_blocks']}")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--json", type=Path, help="write the results here")
        sp.add_argument("--plot", action="store_true", help="write PNG plots beside --json")
        sp.add_argument("--model", help="model (default: the shipped live model)")

    c = sub.add_parser("compute", help="inference time and load per backend")
    common(c)
    c.add_argument("--hop-batches", default="1,2,4,8", help="K values (comma separated)")
    c.add_argument("--channels", default="1,2")
    c.add_argument("--iterations", type=int, default=300)
    c.set_defaults(func=cmd_compute)

    lat = sub.add_parser("latency", help="stated and measured latency of live settings")
    common(lat)
    lat.add_argument("--settings", default=DEFAULT_SETTINGS, help="rate:K:L,... (default %(default)s)")
    lat.add_argument("--blocks", default="128,256,512", help="JACK periods to measure with")
    lat.set_defaults(func=cmd_latency)

    s = sub.add_parser("soak", help="vocex-live for N minutes on JACK with a looped song")
    common(s)
    s.add_argument("--minutes", type=float, default=10.0)
    s.add_argument("--song", type=Path, required=True, help="audio file to loop")
    s.add_argument("--samplerate", type=int, default=48000)
    s.add_argument("--blocksize", type=int, default=256)
    s.set_defaults(func=cmd_soak)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.json is not None and args.json.exists() and not getattr(args, "force", False):
        return fail(PROG, f"{args.json} exists; remove it or choose another --json", EXIT_OUTPUT)
    if args.json is not None and not args.json.parent.is_dir():
        return fail(PROG, f"{args.json.parent}: folder does not exist", EXIT_OUTPUT)
    try:
        return args.func(args)
    except ModelError as exc:
        return fail(PROG, exc, EXIT_MODEL)
    except KeyboardInterrupt:
        return fail(PROG, "interrupted", 130)


if __name__ == "__main__":
    sys.exit(main())
