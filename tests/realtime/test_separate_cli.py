import numpy as np
import pytest
import soundfile as sf

from vocex.realtime.separate_cli import main
from tests.conftest import tone_mix


def _write(path, audio, rate, **kw):
    sf.write(str(path), audio, rate, **kw)
    return path


@pytest.mark.parametrize("rate,channels,fmt", [(44100, 2, "wav"), (22050, 1, "flac"), (48000, 2, "ogg"), (8000, 1, "wav")])
def test_outputs_match_input_shape_and_rate(tiny_model, tmp_path, rate, channels, fmt):
    x = tone_mix(int(1.3 * rate), rate, channels) * 0.8
    src = _write(tmp_path / f"song.{fmt}", x, rate)
    assert main([str(src), "-o", str(tmp_path / "out"), "--model", str(tiny_model), "--no-progress"]) == 0
    info = sf.info(str(src))
    voc, r1 = sf.read(str(tmp_path / "out" / "song" / "vocals.wav"), always_2d=True)
    acc, r2 = sf.read(str(tmp_path / "out" / "song" / "accompaniment.wav"), always_2d=True)
    assert r1 == r2 == rate
    assert voc.shape == acc.shape == (info.frames, channels)
    mix, _ = sf.read(str(src), always_2d=True)
    np.testing.assert_allclose(voc + acc, mix, atol=1e-5)


@pytest.mark.parametrize("n,rate,channels", [(1, 44100, 2), (30000, 192000, 6), (5000, 8000, 8)])
def test_edge_shapes_one_sample_and_many_channels(tiny_model, tmp_path, n, rate, channels):
    x = (0.1 * np.random.default_rng(n).standard_normal((n, channels))).astype(np.float32)
    src = _write(tmp_path / "edge.wav", x, rate, subtype="FLOAT")
    assert main([str(src), "-o", str(tmp_path / "o"), "--model", str(tiny_model), "--no-progress"]) == 0
    voc, r = sf.read(str(tmp_path / "o" / "edge" / "vocals.wav"), always_2d=True, dtype="float32")
    acc, _ = sf.read(str(tmp_path / "o" / "edge" / "accompaniment.wav"), always_2d=True, dtype="float32")
    assert r == rate and voc.shape == (n, channels)
    np.testing.assert_allclose(voc + acc, x, atol=1e-6)


def test_plot_and_existing_outputs(tiny_model, tmp_path, capsys):
    src = _write(tmp_path / "a.wav", tone_mix(9000, 8000), 8000)
    args = [str(src), "-o", str(tmp_path / "o"), "--model", str(tiny_model), "--no-progress", "--plot"]
    assert main(args) == 0
    png = tmp_path / "o" / "a" / "spectrogram.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = (tmp_path / "o" / "a" / "vocals.wav").read_bytes()
    capsys.readouterr()
    assert main(args) == 4
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "exists; use --force" in err
    assert (tmp_path / "o" / "a" / "vocals.wav").read_bytes() == before
    assert main(args + ["--force"]) == 0


def _text(path):
    path.write_text("not audio at all")
    return path


@pytest.mark.parametrize("make,message", [
    (lambda p: p / "missing.wav", "no such file"),
    (lambda p: _text(p / "text.wav"), "not a readable audio file"),
    (lambda p: _write(p / "empty.wav", np.zeros((0, 2), np.float32), 44100), "no audio samples"),
    (lambda p: p, "is a directory"),
])
def test_bad_input_is_one_line_and_nonzero(tiny_model, tmp_path, capsys, make, message):
    src = make(tmp_path)
    code = main([str(src), "-o", str(tmp_path / "out"), "--model", str(tiny_model)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_bad_model_is_exit_3(tmp_path, capsys):
    src = _write(tmp_path / "a.wav", tone_mix(4000, 8000), 8000)
    assert main([str(src), "-o", str(tmp_path / "o"), "--model", str(tmp_path / "nope.json")]) == 3
    assert "no such model" in capsys.readouterr().err


def test_input_is_never_modified(tiny_model, tmp_path):
    src = _write(tmp_path / "keep.wav", tone_mix(5000, 8000), 8000)
    before = src.read_bytes()
    assert main([str(src), "-o", str(tmp_path), "--model", str(tiny_model), "--no-progress"]) == 0
    assert src.read_bytes() == before


def test_separates_a_real_song_with_the_shipped_model(tmp_path):
    from tests.conftest import SHARED_DATA

    song = SHARED_DATA / "mixes" / "slow-motion-dream_steven-m-bryant.mp3"
    if not song.exists():
        pytest.skip(f"real song not found at {song}")
    assert main([str(song), "-o", str(tmp_path), "--no-progress"]) == 0
    mix, rate = sf.read(str(song), always_2d=True)
    voc, r = sf.read(str(tmp_path / song.stem / "vocals.wav"), always_2d=True)
    assert r == rate and voc.shape == mix.shape
    # the vocal estimate is a real part of the song: neither silent nor the whole mix
    ratio = np.sqrt(np.mean(voc**2) / np.mean(mix**2))
    assert 0.05 < ratio < 0.9


def test_streaming_mode_writes_the_live_computation(tiny_model, tmp_path):
    from vocex.model.backends import load_backend, resolve_model
    from vocex.realtime.settings import StreamingSettings
    from vocex.realtime.stream import separate_streaming

    x = tone_mix(20000, 44100)
    src = _write(tmp_path / "s.wav", x, 44100, subtype="FLOAT")
    args = [str(src), "-o", str(tmp_path / "o"), "--model", str(tiny_model), "--streaming",
            "--hop-batch", "2", "--lookahead", "1", "--block-size", "100"]
    assert main(args) == 0
    voc, rate = sf.read(str(tmp_path / "o" / "s" / "vocals.wav"), always_2d=True, dtype="float32")
    expected = separate_streaming(load_backend(resolve_model(tiny_model), "onnx", "cpu"), x, 44100,
                                  StreamingSettings(2, 1), block_size=4096)
    assert rate == 44100 and voc.shape == x.shape
    np.testing.assert_allclose(voc, expected, atol=1e-5)
    assert main([*args[:-6], "--streaming", "--hop-batch", "500", "--force"]) == 2


def test_streaming_without_a_model_is_what_vocex_live_plays(tmp_path):
    from vocex.model.backends import load_backend, resolve_model
    from vocex.realtime.settings import streaming_settings
    from vocex.realtime.stream import separate_streaming

    x = tone_mix(24000, 48000)
    src = _write(tmp_path / "s.wav", x, 48000, subtype="FLOAT")
    assert main([str(src), "-o", str(tmp_path / "o"), "--streaming"]) == 0
    voc, _ = sf.read(str(tmp_path / "o" / "s" / "vocals.wav"), always_2d=True, dtype="float32")
    live = resolve_model("live")
    expected = separate_streaming(load_backend(live, "onnx", "cpu"), x, 48000, streaming_settings(live.card))
    np.testing.assert_allclose(voc, expected, atol=1e-5)


def test_high_band_follows_the_card_and_both_flags(tiny_model, tmp_path):
    """The card's ``offline.high_band`` is the default; ``--high-band`` / ``--no-high-band``
    override it.  Above the model's band, the vocals are silent without the high band."""
    import json
    import shutil

    from vocex.model.backends import resolve_model

    folder = tmp_path / "model"
    shutil.copytree(tiny_model.parent, folder)
    card_path = folder / tiny_model.name
    card = json.loads(card_path.read_text())
    model_rate = resolve_model(card_path).card.sample_rate
    rate = 4 * model_rate
    t = np.arange(rate) / rate
    hiss = 0.2 * np.sin(2 * np.pi * 0.8 * (rate / 2) * t)  # far above the model's band
    src = _write(tmp_path / "s.wav", (tone_mix(rate, rate, 1)[:, 0] * 0.5 + hiss)[:, None], rate, subtype="FLOAT")

    def top_band_vocals(*flags):
        out = tmp_path / f"o{card['offline']['high_band']}{''.join(flags)}"
        assert main([str(src), "-o", str(out), "--model", str(card_path), "--no-progress", *flags]) == 0
        voc, _ = sf.read(str(out / "s" / "vocals.wav"), dtype="float32")
        spec = np.abs(np.fft.rfft(voc))
        return float(spec[int(0.7 * len(spec)):].max())

    for default in (True, False):
        card["offline"] = {**card.get("offline", {}), "high_band": default}
        card_path.write_text(json.dumps(card))
        on, off = top_band_vocals("--high-band"), top_band_vocals("--no-high-band")
        assert on > 100 * max(off, 1e-6)
        assert top_band_vocals() == (on if default else off)


def test_a_stateful_model_separates_a_file_as_its_stream(tmp_path, capsys):
    """Window patches would cut a causal network's past at every patch: a stateful card
    separates as its stream, with a note, and refuses the offline path's options."""
    import vocex
    from tests.conftest import make_model
    from vocex.model.backends import resolve_model
    from vocex.model.export import export

    card = export(resolve_model(make_model(tmp_path / "m", seed=4, causal=True)), tmp_path / "x", "st", ["onnx"],
                  stateful=True)
    x = tone_mix(9000, 8000, 2)
    src = _write(tmp_path / "s.wav", x, 8000, subtype="FLOAT")
    for out, extra in (("plain", []), ("streamed", ["--streaming"])):
        assert main([str(src), "-o", str(tmp_path / out), "--model", str(card), "--no-progress", *extra]) == 0
    assert "st streams statefully: separating as its stream" in capsys.readouterr().err
    plain, streamed = (sf.read(str(tmp_path / o / "s" / "vocals.wav"), dtype="float32")[0] for o in ("plain", "streamed"))
    np.testing.assert_array_equal(plain, streamed)
    assert main([str(src), "-o", str(tmp_path / "p"), "--model", str(card), "--no-progress", "--plot"]) == 2
    assert "--plot is for the offline path" in capsys.readouterr().err
    vocals, _ = vocex.separate(x, 8000, str(card))
    np.testing.assert_allclose(vocals, vocex.separate(x, 8000, str(card), streaming=True)[0], atol=1e-6)
    with pytest.raises(ValueError, match="streams statefully"):
        vocex.separate(x, 8000, str(card), shifts=2)
