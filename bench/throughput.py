"""``vocex-bench throughput``: offline separation speed, in x real time, of vocex and two peers.

The same clip (44.1 kHz stereo float32, in memory; file decoding is not timed) is separated,
in the same run, by

* ``vocex``: the shipped default model (or ``--model``), :class:`vocex.model.separate.Separator`
  on the ONNX Runtime backend, ``threads`` intra-op threads: vocals and accompaniment out;
* ``openunmix``: Open-Unmix UMX-L as ``umx --model umxl --targets vocals --residual`` runs it:
  ``openunmix.umxl(targets=["vocals"], residual=True)`` (the package's default ``niter=1``
  Wiener iteration, ``wiener_win_len=300``, torch STFT) through ``openunmix.predict.separate``;
* ``htdemucs``: ``demucs.htdemucs.HTDemucs`` with the released ``htdemucs`` hyper-parameters,
  run as ``demucs --two-stems vocals`` does: the mix normalised by its mean and standard
  deviation, ``demucs.apply.apply_model(model, mix, split=True, overlap=0.25)`` (one shift),
  the accompaniment the sum of the other three stems.

Weights cannot be downloaded here, so the peers run with random weights: the compute they
do (the operations, the shapes) does not depend on the weights' values.  Each (system,
threads) pair runs in its own subprocess (``torch.set_num_threads`` / ONNX Runtime
intra-op threads, and ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS``), with one warm-up on the
first seconds of the clip, then ``--repeats`` timed separations of the whole clip,
interleaved across the systems round by round; the median is reported.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import types
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

SYSTEMS = ("vocex", "openunmix", "htdemucs")
PEERS = ("openunmix", "htdemucs")
SAMPLE_RATE = 44100
WARMUP_SECONDS = 8.0  # longer than one HT-Demucs segment (7.8 s), so every code path runs once

RANDOM_WEIGHTS_NOTE = ("openunmix and htdemucs run with random weights (no download here); their "
                       "compute cost (operations and tensor shapes) does not depend on the weights' values")

# The released ``htdemucs`` model (signature 955717e8, demucs/remote/htdemucs.yaml): the
# constructor kwargs stored in its checkpoint.  Of these, only segment (7.8 s), dconv_mode 3,
# bottom_channels 512, t_dropout 0.02, multi_freqs [] and t_sparse_attn_window differ from
# HTDemucs' own defaults (the ``mmi`` grid, demucs/grids/mmi.py); the rest are spelled out.
# Built with them the model has 41,984,456 parameters.
HTDEMUCS_KWARGS: dict[str, Any] = {
    "sources": ["drums", "bass", "other", "vocals"], "audio_channels": 2, "samplerate": 44100,
    "segment": Fraction(39, 5), "channels": 48, "growth": 2, "nfft": 4096, "cac": True, "depth": 4,
    "multi_freqs": [], "dconv_mode": 3, "dconv_depth": 2, "dconv_comp": 8, "bottom_channels": 512,
    "t_layers": 5, "t_heads": 8, "t_hidden_scale": 4.0, "t_dropout": 0.02, "t_sparse_attn_window": 400,
}


def synthetic_clip(seconds: float, sample_rate: int = SAMPLE_RATE) -> NDArray[np.float32]:
    """A deterministic song-like stereo clip: ``(n_samples, 2)`` float32 in [-1, 1].

    A vibrato 'voice' in phrases over a bass line, chords and noise bursts (no randomness
    beyond a fixed seed), so every run separates the same samples.
    """
    n = int(round(seconds * sample_rate))
    t = np.arange(n) / sample_rate
    rng = np.random.default_rng(2017)
    voice = 0.25 * np.sin(2 * np.pi * 220 * t * (1 + 0.01 * np.sin(2 * np.pi * 5 * t)))
    voice *= np.sin(2 * np.pi * 0.4 * t) > -0.2
    bass = 0.2 * np.sin(2 * np.pi * 55 * t)
    chords = sum(0.06 * np.sin(2 * np.pi * f * t) for f in (261.6, 329.6, 392.0))
    drums = 0.1 * rng.standard_normal(n) * (np.sin(2 * np.pi * 2 * t) > 0.9)
    left, right = voice + bass + chords + drums, voice + 0.8 * bass + 1.1 * chords + drums
    return np.ascontiguousarray(np.stack([left, right], axis=1), dtype=np.float32)


def load_clip(path: Path, seconds: float) -> NDArray[np.float32]:
    """The first ``seconds`` of a file at 44.1 kHz, stereo (mono duplicated, more channels:
    the first two): ``(n_samples, 2)`` float32."""
    from vocex.model.audio import load_audio

    audio = load_audio(path, SAMPLE_RATE)[: int(round(seconds * SAMPLE_RATE))]
    if audio.shape[1] == 1:
        audio = audio.repeat(2, axis=1)
    return np.ascontiguousarray(audio[:, :2], dtype=np.float32)


def peer_missing(system: str) -> str | None:
    """Why a peer cannot run here (its package not installed), or None."""
    needs = {"openunmix": ("openunmix",), "htdemucs": ("demucs", "einops", "julius")}[system]
    for module in needs:
        if importlib.util.find_spec(module) is None:
            return f"python package {module!r} not installed (pip install -c constraints.txt '.[peers]')"
    return None


def install_torchaudio_shim() -> str | None:
    """If torchaudio does not import (it is built against one torch release), put an empty
    stand-in module in ``sys.modules``; returns what was done, or None when not needed.

    openunmix imports torchaudio at module level (``openunmix.utils`` / ``transforms``) but
    its separation path never calls it for 44.1 kHz input (only ``utils.preprocess`` resamples
    other rates with it, and only the asteroid filterbank converts with it): any attribute
    access on the stand-in raises AttributeError, so a use would fail loudly, not silently
    compute something else.
    """
    try:
        import torchaudio  # noqa: F401
        return None
    except Exception as exc:  # ImportError, OSError (undefined symbols) ...
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"

    stub = types.ModuleType("torchaudio")

    def __getattr__(name: str):  # PEP 562
        raise AttributeError(f"torchaudio.{name}: torchaudio is only a stand-in here (vocex-bench shim)")

    stub.__getattr__ = __getattr__  # type: ignore[attr-defined]
    sys.modules["torchaudio"] = stub
    return (f"torchaudio does not import here ({reason}); openunmix was imported with an empty "
            "stand-in module named torchaudio in sys.modules (torchaudio is only imported by openunmix, "
            "never called on its separation path at 44.1 kHz; any attribute use would raise)")


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def make_separator(system: str, threads: int, model: str | None = None):
    """``(separate, info)``: ``separate(audio)`` maps ``(n_samples, 2)`` float32 at 44.1 kHz to
    ``(vocals, accompaniment)``; ``info`` describes the system (version, configuration)."""
    if system == "vocex":
        import vocex
        from vocex.model.separate import DEFAULT_SHIFTS, Separator

        m = vocex.load(model or "default", backend="onnx", accel="cpu", threads=threads)
        card = m.card
        info = {"model": str(m.files.card_path), "model_name": card.name, "backend": "onnx",
                "sample_rate": card.sample_rate, "n_fft": card.n_fft, "hop": card.hop,
                "base_channels": card.base_channels, "version": _version("vocex")}

        def separate(audio):  # a stateful model separates as its stream, as in vocex-separate
            return vocex.separate(audio, SAMPLE_RATE, model=m, block_size=4096)

        if card.streaming == "stateful":
            from vocex.realtime.settings import streaming_settings

            return separate, {**info, "streaming": streaming_settings(card).describe(card)}
        separator = Separator(m.backend, shifts=DEFAULT_SHIFTS)  # what vocex.separate runs, described
        return separate, {**info, "shifts": separator.shifts, "mask_temperature": separator.temperature,
                          "high_band": separator.high_band}

    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    if system == "openunmix":
        shim = install_torchaudio_shim()
        import openunmix
        from openunmix import predict

        separator = openunmix.umxl(targets=["vocals"], residual=True, device="cpu", pretrained=False)
        separator.freeze()  # eval mode, no gradients: what predict.separate does with a loaded model
        names = list(separator.target_models) + ["residual"]
        n_params = sum(p.numel() for p in separator.parameters())

        def separate(audio):
            with torch.inference_mode():
                est = predict.separate(torch.from_numpy(audio.T.copy()), rate=SAMPLE_RATE, separator=separator)
            vocals = est["vocals"][0].numpy().T
            return vocals, est["residual"][0].numpy().T

        info = {"version": _version("openunmix"), "architecture": "umxl", "targets": names,
                "niter": separator.niter, "wiener_win_len": separator.wiener_win_len, "n_fft": 4096, "n_hop": 1024,
                "parameters": n_params, "weights": "random (pretrained=False)"}
        if shim:
            info["shim"] = shim
        return separate, info

    if system == "htdemucs":
        from demucs.apply import apply_model
        from demucs.htdemucs import HTDemucs

        net = HTDemucs(**HTDEMUCS_KWARGS).eval()
        vocals_i = net.sources.index("vocals")
        n_params = sum(p.numel() for p in net.parameters())

        def separate(audio):
            wav = torch.from_numpy(audio.T.copy())
            ref = wav.mean(0)
            mean, std = ref.mean(), ref.std()
            with torch.inference_mode():
                sources = apply_model(net, ((wav - mean) / (std + 1e-8))[None], split=True, overlap=0.25,
                                      progress=False)[0]
            sources = sources * std + mean
            vocals = sources[vocals_i]
            others = sources.sum(0) - vocals
            return vocals.numpy().T, others.numpy().T

        kw = {k: (str(v) if isinstance(v, Fraction) else v) for k, v in HTDEMUCS_KWARGS.items()}
        return separate, {"version": _version("demucs"), "architecture": "htdemucs (released hyper-parameters)",
                          "kwargs": kw, "parameters": n_params, "apply_model": {"split": True, "overlap": 0.25, "shifts": 1},
                          "weights": "random"}
    raise ValueError(f"unknown system {system!r}")


class Worker:
    """One (system, threads) pair in its own subprocess, its thread count fixed in the
    environment: it builds the separator and warms up, then times one separation of the
    clip each time :meth:`time_once` asks.  ``error`` is set (and no more runs are done) when
    it fails."""

    def __init__(self, system: str, threads: int, clip_path: Path, model: str | None) -> None:
        self.system, self.threads, self.error, self.info = system, threads, None, None
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        cmd = [sys.executable, "-m", "vocex.bench.throughput", system, str(threads), str(clip_path)]
        if model:
            cmd.append(model)
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._stderr, text=True, bufsize=1)

    def _reply(self) -> dict[str, Any] | None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:  # skip anything a library prints on stdout
            if line.startswith("{"):
                return json.loads(line)
        self.proc.wait()
        self._stderr.seek(0)
        lines = [ln for ln in self._stderr.read().splitlines() if ln.strip()]
        self.error = f"exit {self.proc.returncode}: {lines[-1] if lines else 'no message'}"
        return None

    def ready(self) -> bool:
        """Wait for the warm-up; False (and ``error``) if the worker failed."""
        reply = self._reply()
        if reply is not None:
            self.info = reply["info"]
        return reply is not None

    def time_once(self) -> float | None:
        if self.error:
            return None
        assert self.proc.stdin is not None
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        reply = self._reply()
        return None if reply is None else float(reply["seconds"])

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()


def run(audio: NDArray[np.float32], systems: list[str], threads: list[int], repeats: int,
        model: str | None = None, clip: str = "synthetic", progress=None) -> dict[str, Any]:
    """Time every available system at every thread count; the JSON-ready report.

    For each thread count, one worker per system is started and warmed up; then the timed
    separations are interleaved (vocex, openunmix, htdemucs, vocex, ...), so that a change
    in the machine's load during the run affects every system alike."""
    say = progress or (lambda msg: None)
    load_before = [round(x, 2) for x in os.getloadavg()]
    clip_seconds = round(audio.shape[0] / SAMPLE_RATE, 3)
    results: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    systems_info: dict[str, Any] = {}
    notes = [RANDOM_WEIGHTS_NOTE,
             "seconds: median wall time of one separation of the whole clip, from the 44.1 kHz stereo float32 "
             "array in memory to vocals and accompaniment arrays (file decoding not timed); each (system, "
             f"threads) runs in its own subprocess, warmed up by one separation of the first {WARMUP_SECONDS:g} s; "
             "the timed separations of the systems are interleaved, round by round",
             "x_realtime = clip_seconds / seconds; min_seconds is the fastest repeat"]
    for system in systems:
        missing = peer_missing(system) if system in PEERS else None
        if missing:
            skipped[system] = missing
    with tempfile.TemporaryDirectory() as tmp:
        clip_path = Path(tmp) / "clip.npy"
        np.save(clip_path, audio)
        for n in threads:
            workers = []
            for system in systems:
                if system in skipped:
                    continue
                say(f"{system}, {n} thread{'s' if n > 1 else ''}: loading and warming up ...")
                worker = Worker(system, n, clip_path, model if system == "vocex" else None)
                if worker.ready():
                    workers.append(worker)
                    systems_info[system] = worker.info
                else:
                    skipped[system] = f"failed with {n} threads: {worker.error}"
                    worker.close()
            times: dict[str, list[float]] = {w.system: [] for w in workers}
            try:
                for i in range(repeats):
                    for w in workers:
                        t = w.time_once()
                        if t is None:
                            skipped[w.system] = f"failed with {n} threads: {w.error}"
                            continue
                        times[w.system].append(t)
                        say(f"  round {i + 1}/{repeats}, {w.system}, {n} thread{'s' if n > 1 else ''}: {t:.3f} s "
                            f"({clip_seconds / t:.2f}x real time)")
            finally:
                for w in workers:
                    w.close()
            for system, ts in times.items():
                if system in skipped or not ts:
                    continue
                seconds = float(np.median(ts))
                results.append({"system": system, "threads": n, "seconds": round(seconds, 4),
                                "x_realtime": round(clip_seconds / seconds, 3), "min_seconds": round(min(ts), 4),
                                "times": [round(t, 4) for t in ts]})
    results = [r for r in results if r["system"] not in skipped]
    results.sort(key=lambda r: (SYSTEMS.index(r["system"]), r["threads"]))
    for system, info in systems_info.items():
        if "shim" in info:
            notes.append(f"{system}: {info['shim']}")
    report: dict[str, Any] = {"clip_seconds": clip_seconds, "results": results, "clip": clip,
                              "sample_rate": SAMPLE_RATE, "channels": 2, "repeats": repeats,
                              "systems": {k: v for k, v in systems_info.items() if k not in skipped},
                              "random_weights": [s for s in systems_info if s in PEERS and s not in skipped],
                              "skipped": skipped, "notes": notes, "ratios": ratios(results),
                              "ratios_of_fastest": ratios(results, "min_seconds"),
                              "load_average": {"before": load_before, "after": [round(x, 2) for x in os.getloadavg()],
                                               "cpus": os.cpu_count()}}
    speed = report["ratios"].get("vocex/openunmix", {}).get("1")
    if speed is not None:
        report["acceptance"] = {"criterion": "vocex offline >= 10x faster than Open-Unmix, 1 thread, same clip, same run",
                                "ratio": speed, "met": speed >= 10}
    return report


def ratios(results: list[dict[str, Any]], key: str = "seconds") -> dict[str, dict[str, float]]:
    """``{"vocex/<peer>": {"<threads>": how many times faster vocex is}}``: peer ``key`` (median
    seconds; or ``min_seconds``) over vocex's, i.e. vocex x_realtime over the peer's."""
    by = {(r["system"], r["threads"]): 1.0 / r[key] for r in results}
    out: dict[str, dict[str, float]] = {}
    for peer in PEERS:
        for (system, n), x in by.items():
            if system == "vocex" and (peer, n) in by:
                out.setdefault(f"vocex/{peer}", {})[str(n)] = round(x / by[peer, n], 2)
    return out


def table(report: dict[str, Any]) -> str:
    lines = [f"clip: {report['clip']}, {report['clip_seconds']} s; median of {report['repeats']} separations",
             f"{'system':<10} {'threads':>7} {'seconds':>9} {'fastest':>9} {'x realtime':>11}"]
    for r in report["results"]:
        fastest = f"{r['min_seconds']:9.3f}" if "min_seconds" in r else f"{'':9}"
        lines.append(f"{r['system']:<10} {r['threads']:>7} {r['seconds']:9.3f} {fastest} {r['x_realtime']:11.2f}")
    for key, per in report["ratios"].items():
        lines.append(f"{key} (medians): " + ", ".join(f"{v:.1f}x with {n} thread{'s' if n != '1' else ''}"
                                                      for n, v in per.items()))
    for key, per in report.get("ratios_of_fastest", {}).items():
        lines.append(f"{key} (fastest repeats): " + ", ".join(f"{v:.1f}x with {n} thread{'s' if n != '1' else ''}"
                                                              for n, v in per.items()))
    for system, why in report["skipped"].items():
        lines.append(f"skipped {system}: {why}")
    if "acceptance" in report:
        a = report["acceptance"]
        lines.append(f"acceptance (>= 10x vs Open-Unmix, 1 thread): {a['ratio']:.1f}x -> {'met' if a['met'] else 'NOT met'}")
    if "load_average" in report:
        la = report["load_average"]
        lines.append(f"machine load average (1, 5, 15 min) before {la['before']}, after {la['after']}, "
                     f"{la['cpus']} CPUs (a load above the CPU count: other processes competed for the CPUs)")
    lines += [f"note: {n}" for n in report["notes"] if "random weights" in n or "stand-in" in n]
    return "\n".join(lines)


def _worker_main(argv: list[str]) -> int:
    """``python -m vocex.bench.throughput SYSTEM THREADS CLIP.npy [MODEL]``: build and warm up,
    print ``{"info": ...}``; then for each ``run`` line on stdin time one separation and print
    ``{"seconds": ...}``; exit at end of input."""
    system, threads, clip_path = argv[0], int(argv[1]), Path(argv[2])
    model = argv[3] if len(argv) > 3 else None
    audio = np.load(clip_path)
    separate, info = make_separator(system, threads, model)
    separate(audio[: max(1, min(audio.shape[0], int(WARMUP_SECONDS * SAMPLE_RATE)))])
    print(json.dumps({"info": info}), flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            continue
        started = time.perf_counter()
        vocals, accompaniment = separate(audio)
        seconds = time.perf_counter() - started
        if vocals.shape != audio.shape or accompaniment.shape != audio.shape:
            raise RuntimeError(f"{system}: output shapes {vocals.shape}, {accompaniment.shape} != input {audio.shape}")
        if not (np.isfinite(vocals).all() and np.isfinite(accompaniment).all()):
            raise RuntimeError(f"{system}: non-finite output")
        print(json.dumps({"seconds": seconds}), flush=True)
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clip", type=Path, help="audio file to separate (default: a synthetic song-like clip)")
    p.add_argument("--seconds", type=float, default=30.0, help="clip length in seconds (default %(default)s)")
    p.add_argument("--threads", default="1,2", help="thread counts (default %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="timed separations per setting (default %(default)s)")
    p.add_argument("--systems", default=",".join(SYSTEMS), help="of %(default)s")


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
