"""``vocex-live``: the song without its vocals (karaoke) or the vocals alone, live.

    vocex-live -l                          # list audio devices
    vocex-live --device 3                  # karaoke from device 3's input to its output
    vocex-live -i "USB" -o "Speakers" --mode vocals --duration 60 --stats-json s.json

The command line only: the engine (threads, ring buffers, what happens when the worker is
late) is :mod:`vocex.realtime.engine`, over the device I/O of :mod:`vocex.realtime.audio_io`
(``--io``); devices are named as :mod:`vocex.realtime.devices` says; the statistics
(``--stats-json``) are :mod:`vocex.realtime.stats`; keys typed in its terminal change the
mode, the mix and bypass while it plays (:mod:`vocex.realtime.keys`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from vocex.model.backends import load_backend, resolve_model
from vocex.model.cli import add_model_arguments, console
from vocex.model.errors import EXIT_OK, DeviceError, InputError, OutputError, raise_as
from vocex.model.files import atomic_path
from vocex.realtime import audio_io
from vocex.realtime.audio_io import IO_KINDS
from vocex.realtime.devices import device_rate, latency_setting, list_devices, resolve_device
from vocex.realtime.engine import LiveEngine
from vocex.realtime.keys import KEYS_HELP, KeyControl, keys_wanted
from vocex.realtime.settings import live_model_path, streaming_settings
from vocex.realtime.stats import LiveStats
from vocex.realtime.stream import MODES, StreamingSeparator
from vocex.realtime.timing import auto_hop_batch

PROG = "vocex-live"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0], epilog=KEYS_HELP,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-l", "--list-devices", action="store_true", help="list audio devices and exit")
    p.add_argument("-d", "--device", help="input and output device (numeric id or name substring)")
    p.add_argument("-i", "--input-device", help="input device (id or name substring)")
    p.add_argument("-o", "--output-device", help="output device (id or name substring)")
    p.add_argument("--samplerate", type=int, help="device sample rate in Hz (default: the device's own)")
    p.add_argument("--blocksize", type=int, default=256, help="device block size in samples")
    p.add_argument("--latency", help="PortAudio latency: 'low', 'high' or seconds (default: low)", default="low")
    p.add_argument("--channels", type=int, default=2, help="1 (mono) or 2 (stereo); each separated on its own")
    p.add_argument("--mode", choices=MODES, default="karaoke", help="karaoke: without vocals; vocals: vocals only")
    p.add_argument("--mix", type=float, default=1.0, help="wet amount 0..1 (0 = the dry input)")
    add_model_arguments(p, backends=("onnx", "torchscript"), threads_default="1")
    p.add_argument("--hop-batch", help="K: hops per inference, or 'auto': the smallest K whose measured "
                   "inference time takes at most half the time between inferences (default: the model card's)")
    p.add_argument("--lookahead", type=int, help="L: lookahead frames (default: the model card's)")
    p.add_argument("--io", choices=tuple(IO_KINDS), default="rtmixer",
                   help="device I/O: rtmixer's C callback (default) or a copying sounddevice callback")
    p.add_argument("--prefill-blocks", type=int,
                   help="output ring prefill in blocks (default: from the measured inference time)")
    p.add_argument("--on-late", choices=("dry", "silence"), default="dry",
                   help="what plays while the worker is late")
    p.add_argument("--no-realtime", action="store_true",
                   help="leave the inference worker at normal scheduling (default: SCHED_FIFO below the audio "
                        "server's priority where the system permits it, else a raised nice value)")
    p.add_argument("--duration", type=float, help="stop after this many seconds (exit 0)")
    p.add_argument("--stats-json", type=Path, help="write run statistics here on exit")
    p.add_argument("--no-status", action="store_true", help="no status line and no keys")
    return p


@console(PROG)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list_devices:
        print(list_devices())
        return EXIT_OK
    if args.channels not in (1, 2):
        raise InputError("--channels must be 1 or 2")
    if not 0.0 <= args.mix <= 1.0:
        raise InputError("--mix must be between 0 and 1")
    if args.stats_json is not None and not args.stats_json.parent.is_dir():
        raise OutputError(f"{args.stats_json.parent}: folder for --stats-json does not exist")
    files = resolve_model(args.model or live_model_path())
    backend = load_backend(files, args.backend, args.accel, args.threads or 1)
    card = files.card
    auto: dict[str, Any] = {}
    if args.hop_batch not in (None, "auto") and not args.hop_batch.isdigit():
        raise InputError(f"--hop-batch must be a whole number of hops or 'auto', got {args.hop_batch!r}")
    # auto starts from K=1 (the least context it needs) with the card's or the given lookahead
    hop_batch = 1 if args.hop_batch == "auto" else None if args.hop_batch is None else int(args.hop_batch)
    with raise_as(InputError, ValueError):
        settings = streaming_settings(card, hop_batch, args.lookahead)
    if args.hop_batch == "auto":
        k, measured = auto_hop_batch(backend, args.channels, settings)
        settings = replace(settings, hop_batch=k)
        auto = {"hop_batch_auto": measured}
        what = (f"inference p90 {measured['inference_ms_p90']:.2f} ms" if "inference_ms_p90" in measured else
                "slowest step " + ", ".join(f"{ms:.2f} ms at K={kk}" for kk, ms in measured["slowest_step_ms"].items()))
        print(f"{PROG}: --hop-batch auto: {what} -> K={k}", file=sys.stderr)
    latency = latency_setting(args.latency)
    dev_in = resolve_device(args.input_device or args.device, "input")
    dev_out = resolve_device(args.output_device or args.device, "output")
    rate = args.samplerate or device_rate(dev_out, card.sample_rate)
    separator = StreamingSeparator(backend, args.channels, rate, settings, args.mode, args.mix,
                                   max_block=max(4096, args.blocksize))
    stats = LiveStats(
        sample_rate=rate, model=str(files.card_path),
        algorithmic_latency_ms=round(1000 * separator.latency_samples / rate, 2), device_latency_ms=0.0,
        buffer_latency_ms=0.0,
        hop_ms=round(1000 * card.hop / card.sample_rate, 3),
        inference_interval_ms=round(1000 * settings.hop_batch * card.hop / card.sample_rate, 3),
        details={"mode": args.mode, "mix": args.mix, "backend": backend.name, "device": backend.device,
                 "channels": args.channels, "blocksize": args.blocksize, "io": args.io,
                 "algorithmic_latency_samples": separator.latency_samples, **settings.describe(card), **auto},
    )
    io = IO_KINDS[args.io]((dev_in, dev_out), args.channels, rate, args.blocksize, latency)
    engine = LiveEngine(separator, stats, io, args.on_late, args.prefill_blocks, realtime=not args.no_realtime)
    engine.open()

    def started_line() -> None:
        worker = engine.scheduling.describe() if engine.scheduling else "not running"
        print(f"{PROG}: playing {separator.mode}, K={settings.hop_batch}, latency {stats.total_latency_ms:.1f} ms, "
              f"inference worker: {worker}", file=sys.stderr)

    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda *_: engine.stop_event.set())
    status = not args.no_status and sys.stderr.isatty()
    keys = KeyControl(separator, engine.stop_event) if keys_wanted(args.no_status) else None
    try:
        if keys is not None and keys.start():
            print(f"{PROG}: keys: k karaoke, v vocals, +/- mix, b bypass, q quit", file=sys.stderr)
        engine.run(args.duration, status, started_line)
        stats.ended_by = "duration" if args.duration is not None and not engine.error else "signal"
        if keys is not None and keys.quit:
            stats.ended_by = "key q"
    except KeyboardInterrupt:
        stats.ended_by = "ctrl-c"
        raise
    except DeviceError as exc:
        stats.ended_by = f"device error: {exc}"
        raise
    finally:
        if keys is not None:  # the terminal's settings come back on every way out
            keys.close()
            stats.details["controls"] = keys.events
        signal.signal(signal.SIGTERM, previous)
        engine.close()
        if stats.inference_ms == {}:
            stats.inference_ms = separator.timings.summary_ms()
        if status:
            print(file=sys.stderr)
        if args.stats_json is not None:
            with atomic_path(args.stats_json) as tmp:
                tmp.write_text(json.dumps(stats.to_json(), indent=2) + "\n")
        print(f"{PROG}: {stats.seconds:.1f} s, {separator.mode}, latency {stats.total_latency_ms:.1f} ms "
              f"(algorithmic {stats.algorithmic_latency_ms:.1f} + buffers {stats.buffer_latency_ms:.1f} + device "
              f"{stats.device_latency_ms:.1f}), load {stats.load:.2f}, xruns {stats.xruns}, "
              f"late blocks {stats.late_blocks}", file=sys.stderr)
    return EXIT_OK


def cli() -> None:
    """Console-script entry point: ``main()``, then exit.  After the audio server died, the
    abandoned stream's PortAudio/JACK threads can hold up interpreter teardown for seconds,
    so the process then ends at once (the statistics file and the summary are already out)."""
    code = main()
    if audio_io.abandoned():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    cli()
