"""``vocex-bench``: what vocex achieves on this machine.

    vocex-bench compute --json bench/results/compute.json --plot
    vocex-bench latency --json bench/results/latency.json
    vocex-bench soak --minutes 10 --json bench/results/soak.json
    vocex-bench throughput --json bench/results/throughput.json
    vocex-bench memory --minutes 20,60,180 --json bench/results/memory.json
    vocex-bench quality --musdb-root ../shared/data/musdb18hq-mini --json bench/results/quality.json --plot

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

from vocex.model.backends import resolve_model
from vocex.model.card import CardError
from vocex.model.cli import console
from vocex.model.errors import EXIT_OK, DeviceError, InputError, OutputError, raise_as
from vocex.model.files import atomic_path

PROG = "vocex-bench"


def _machine() -> dict[str, Any]:
    import os

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "load_average_1_5_15min": [round(x, 2) for x in os.getloadavg()]}


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
    from vocex.realtime.settings import live_model_path

    return resolve_model(spec or live_model_path())


def cmd_compute(args: argparse.Namespace) -> int:
    from vocex.bench import compute

    files = _live_model(args.model)
    try:
        report = compute.run(files, [int(k) for k in args.hop_batches.split(",")],
                             [int(c) for c in args.channels.split(",")], args.iterations, args.whole, args.form)
    except CardError as exc:  # the card cannot stream in the asked form: a bad --form, not a bad model
        raise InputError(f"--form {args.form}: {exc}") from exc
    report["machine"] = _machine()
    print(compute.table(report))
    _write(args.json, report)
    if args.plot and args.json:
        compute.plot(report, args.json.with_suffix(".png"))
    return EXIT_OK


def cmd_latency(args: argparse.Namespace) -> int:
    from vocex.bench import latency
    from vocex.realtime.settings import streaming_settings

    files = _live_model(args.model)
    if args.settings is None:  # the model's own live defaults, at both device rates
        live = streaming_settings(files.card)
        settings = [{"rate": rate, "K": live.hop_batch, "L": live.lookahead_frames} for rate in (48000, 44100)]
    else:
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
    from vocex.model.audio import load_audio

    missing = _jack_missing()
    if missing:
        raise DeviceError(f"soak needs a JACK server: {missing}")
    song = load_audio(args.song, args.samplerate)  # AudioError: exit 2
    if song.shape[1] == 1:
        song = song.repeat(2, axis=1)
    if args.cpu_hog < 0:
        raise InputError(f"--cpu-hog must be >= 0, got {args.cpu_hog}")
    with soak.cpu_hogs(args.cpu_hog):
        control = soak.control(song[:, :2], args.control_minutes, args.samplerate, args.blocksize) if args.control_minutes > 0 else None
        report = soak.run(song[:, :2], args.minutes, args.model, args.samplerate, args.blocksize)
    report.update({"song": str(args.song), "machine": _machine(), "control": control, "cpu_hog": args.cpu_hog})
    print(soak.table(report))
    _write(args.json, report)
    if args.plot and args.json:
        _plot_soak(report, args.json.with_suffix(".png"))
    return EXIT_OK


def cmd_throughput(args: argparse.Namespace) -> int:
    from vocex.bench import throughput

    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = sorted(set(systems) - set(throughput.SYSTEMS))
    if unknown or not systems:
        raise InputError(f"--systems: unknown {', '.join(unknown) or '(none given)'}; choose from "
                         f"{', '.join(throughput.SYSTEMS)}")
    with raise_as(InputError, ValueError,
                  message=lambda _: f"--threads: expected comma-separated integers, got {args.threads!r}"):
        threads = [int(n) for n in args.threads.split(",")]
    if min(threads) < 1 or args.repeats < 1 or args.seconds <= 0:
        raise InputError("--threads and --repeats must be >= 1 and --seconds > 0")
    if "vocex" in systems:
        resolve_model(args.model)  # a bad --model fails here (exit 3), not in a worker
    if args.clip is None:
        audio, clip = throughput.synthetic_clip(args.seconds), f"synthetic (vocex.bench.throughput.synthetic_clip, {args.seconds:g} s)"
    else:
        with raise_as(InputError, OSError):  # AudioError: exit 2 as it is
            audio = throughput.load_clip(args.clip, args.seconds)
        if audio.shape[0] == 0:
            raise InputError(f"{args.clip}: no audio")
        clip = f"{args.clip} (first {audio.shape[0] / throughput.SAMPLE_RATE:g} s, resampled to 44.1 kHz stereo)"
    report = throughput.run(audio, systems, threads, args.repeats, args.model, clip,
                            progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    report["machine"] = _machine()
    print(throughput.table(report))
    _write(args.json, report)
    return EXIT_OK


def cmd_quality(args: argparse.Namespace) -> int:
    from vocex.bench import quality

    with raise_as(InputError, ValueError, message=lambda exc: f"--settings: {exc}"):
        settings = quality.parse_settings(args.settings)
    streaming_files = _live_model(args.model)
    offline_files = resolve_model(args.offline_model)
    for k, lookahead in settings:
        if k + lookahead > streaming_files.card.context_frames:
            raise InputError(f"--settings {k}:{lookahead}: K + L must be at most context_frames "
                             f"({streaming_files.card.context_frames})")
    with raise_as(InputError, OSError):  # DataError: exit 2 as it is
        report = quality.run(args.musdb_root, args.subset, streaming_files, offline_files, settings, args.tracks)
    report["machine"] = _machine()
    print(quality.table(report))
    _write(args.json, report)
    if args.plot and args.json:
        quality.plot(report, args.json.with_suffix(".png"))
        print(f"wrote {args.json.with_suffix('.png')}", file=sys.stderr)
    return EXIT_OK


def cmd_memory(args: argparse.Namespace) -> int:
    from vocex.bench import memory

    with raise_as(InputError, ValueError,
                  message=lambda _: f"--minutes: expected comma-separated numbers, got {args.minutes!r}"):
        minutes = [float(m) for m in args.minutes.split(",")]
    if min(minutes) <= 0:
        raise InputError("--minutes must be positive")
    if args.model:
        resolve_model(args.model)  # a bad --model fails here (exit 3), not in the child
    with raise_as(OutputError, OSError):
        report = memory.run(minutes, args.model, ["--streaming"] if args.streaming else [], args.tmp_dir,
                            progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    report["machine"] = _machine()
    print(memory.table(report))
    _write(args.json, report)
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
    c.add_argument("--whole", action="store_true",
                   help="time the network on the whole window, not the newest K columns the live path "
                        "asks for (the cost before the newest-columns graph)")
    c.add_argument("--form", choices=("window", "stateful"),
                   help="streaming form to time (default: the card's; stateful needs a causal card "
                        "exported with vocex-export --stateful)")
    c.set_defaults(func=cmd_compute)

    lat = sub.add_parser("latency", help="stated and measured latency of live settings")
    common(lat)
    lat.add_argument("--settings", help="rate:K:L,... (default: the model's own K and L at 48000 and 44100 Hz)")
    lat.add_argument("--blocks", default="128,256,512", help="JACK periods to measure with")
    lat.set_defaults(func=cmd_latency)

    s = sub.add_parser("soak", help="vocex-live for N minutes on JACK with a looped song")
    common(s)
    s.add_argument("--minutes", type=float, default=10.0)
    s.add_argument("--song", type=Path, required=True, help="audio file to loop")
    s.add_argument("--samplerate", type=int, default=48000)
    s.add_argument("--blocksize", type=int, default=256)
    s.add_argument("--control-minutes", type=float, default=0.0,
                   help="first run the server and player this long without vocex-live: the xruns the machine alone causes")
    s.add_argument("--cpu-hog", type=int, default=0, metavar="N",
                   help="run N processes spinning on the cores throughout (control run included): a busy machine")
    s.set_defaults(func=cmd_soak)

    t = sub.add_parser("throughput", help="offline separation speed (x real time) vs Open-Unmix and HT-Demucs")
    t.add_argument("--json", type=Path, help="write the results here")
    t.add_argument("--model", help="vocex model (default: the shipped default model)")
    from vocex.bench.throughput import add_arguments

    add_arguments(t)
    t.set_defaults(func=cmd_throughput)

    m = sub.add_parser("memory", help="peak memory and speed of vocex-separate on long synthetic WAVs")
    m.add_argument("--json", type=Path, help="write the results here")
    m.add_argument("--model", help="model (default: the shipped default model)")
    m.add_argument("--minutes", default="20,60", help="lengths to measure (comma separated; default %(default)s)")
    m.add_argument("--streaming", action="store_true", help="measure vocex-separate --streaming")
    m.add_argument("--tmp-dir", type=Path, help="where to write the WAVs and outputs (default: the system's)")
    m.set_defaults(func=cmd_memory)

    q = sub.add_parser("quality", help="museval SDR of the streaming path per K:L, and offline (quality vs latency)")
    common(q)
    q.add_argument("--musdb-root", type=Path, required=True, help="MUSDB18 / MUSDB18-HQ / DSD100 folder")
    q.add_argument("--subset", choices=("train", "test"), default="test")
    q.add_argument("--settings", default="1:0,2:0,4:0,2:2,4:4", help="K:L,... (default %(default)s)")
    q.add_argument("--tracks", type=int, help="score only the first N tracks")
    q.add_argument("--offline-model", help="model for the offline row (default: the shipped default model)")
    q.set_defaults(func=cmd_quality)
    return p


@console(PROG)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.json is not None and args.json.exists() and not getattr(args, "force", False):
        raise OutputError(f"{args.json} exists; remove it or choose another --json")
    if args.json is not None and not args.json.parent.is_dir():
        raise OutputError(f"{args.json.parent}: folder does not exist")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
