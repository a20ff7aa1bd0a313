import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vocex.realtime.settings import StreamingSettings
from vocex.realtime.stream import StreamingSeparator, separate_streaming

from tests.conftest import TINY, tone_mix
from tests.realtime.reference import reference_vocals

RATE = TINY["sample_rate"]


def _run(sep, x, block_sizes):
    out = np.zeros_like(x)
    pos, i = 0, 0
    while pos < len(x):
        b = block_sizes[i % len(block_sizes)]
        sep.process_block(x[pos : pos + b], out[pos : pos + b])
        pos += b
        i += 1
    return out


@pytest.mark.parametrize("K,L", [(1, 0), (4, 0), (2, 3), (8, 8)])
def test_streaming_equals_offline_reference(tiny_backend, K, L):
    x = tone_mix(RATE, RATE)
    s = StreamingSettings(K, L)
    ref = reference_vocals(tiny_backend, x, s)
    got = separate_streaming(tiny_backend, x, RATE, s, block_size=300)
    np.testing.assert_allclose(got, ref, atol=2e-5)
    assert np.abs(ref).max() > 0.01


def test_the_mask_temperature_softens_the_streamed_mask(tiny_backend):
    x = tone_mix(RATE, RATE, seed=2)
    plain, warm = StreamingSettings(4, 1), StreamingSettings(4, 1, mask_temperature=2.0)
    got = separate_streaming(tiny_backend, x, RATE, warm, block_size=256)
    np.testing.assert_allclose(got, reference_vocals(tiny_backend, x, warm), atol=2e-5)
    assert np.abs(got - reference_vocals(tiny_backend, x, plain)).max() > 1e-3
    with pytest.raises(ValueError, match="temperature must be positive"):
        StreamingSeparator(tiny_backend, 2, RATE, StreamingSettings(mask_temperature=0.0))


@pytest.mark.parametrize("K,L", [(1, 0), (3, 2)])
def test_latency_is_exact_without_resampling(tiny_backend, K, L):
    s = StreamingSettings(K, L)
    sep = StreamingSeparator(tiny_backend, 1, RATE, s, mode="karaoke", mix=0.0)
    assert sep.latency_samples == TINY["n_fft"] - 1 + (K - 1 + L) * TINY["hop"]
    x = np.zeros((3000, 1), np.float32)
    x[100] = 1.0
    y = _run(sep, x, [7])
    assert np.argmax(np.abs(y)) == 100 + sep.latency_samples  # dry path, same delay


@pytest.mark.parametrize("device_rate", [RATE, 44100, 48000, 11025])
def test_output_does_not_depend_on_block_size(tiny_backend, device_rate):
    x = tone_mix(3 * device_rate, device_rate)  # past the resamplers' start-up transients
    s = StreamingSettings(2, 1)
    results = []
    for sizes in ([4097], [1, 64, 65, 256], [256], [777, 3]):
        sep = StreamingSeparator(tiny_backend, 2, device_rate, s, mode="karaoke", mix=0.8, max_block=512)
        results.append(_run(sep, x, sizes))
        assert sep.underruns == 0
    for r in results[1:]:
        np.testing.assert_allclose(r, results[0], atol=1e-6)


def test_resampled_stream_matches_offline_resampling(tiny_backend):
    """At another device rate the stream equals: resample, reference, resample back."""
    from vocex.model.audio import resample

    rate = 22050
    x = tone_mix(rate, rate, n_channels=1)
    s = StreamingSettings(2, 1, resampler_quality="HQ")  # the quality vocex.model.audio uses
    got = separate_streaming(tiny_backend, x, rate, s, block_size=1000)
    ref_model = reference_vocals(tiny_backend, resample(x, rate, RATE), s)
    ref = resample(ref_model, RATE, rate, n_out=len(x))
    # one-shot resampling of a finite signal differs from the stream (which goes on into the
    # flush) only in the resampler's last few output samples
    np.testing.assert_allclose(got[:-32], ref[:-32], atol=2e-5)


def test_modes_and_mix(tiny_backend):
    x = tone_mix(4000, RATE)
    s = StreamingSettings(1, 0)
    outs = {}
    for mode, mix in (("vocals", 1.0), ("karaoke", 1.0), ("karaoke", 0.0), ("vocals", 0.5)):
        sep = StreamingSeparator(tiny_backend, 2, RATE, s, mode=mode, mix=mix)
        y = np.vstack([sep.process_block(x), sep.flush()])[sep.latency_samples :]
        outs[mode, mix] = y
    np.testing.assert_allclose(outs["vocals", 1.0] + outs["karaoke", 1.0], x, atol=1e-5)
    np.testing.assert_allclose(outs["karaoke", 0.0], x, atol=1e-6)
    np.testing.assert_allclose(outs["vocals", 0.5], 0.5 * outs["vocals", 1.0] + 0.5 * x, atol=1e-5)


def test_reset_restarts_the_stream(tiny_backend):
    x = tone_mix(3000, RATE)
    sep = StreamingSeparator(tiny_backend, 2, 44100, StreamingSettings(2, 0))
    first = sep.process_block(x).copy()
    sep.process_block(tone_mix(3000, RATE, seed=5))
    sep.reset()
    np.testing.assert_allclose(sep.process_block(x), first, atol=1e-6)


def test_rejects_bad_blocks_and_settings(tiny_backend):
    sep = StreamingSeparator(tiny_backend, 2, RATE)
    with pytest.raises(ValueError):
        sep.process_block(np.zeros((10, 1), np.float32))
    with pytest.raises(ValueError):
        StreamingSeparator(tiny_backend, 2, RATE, StreamingSettings(60, 10))
    with pytest.raises(ValueError):
        StreamingSeparator(tiny_backend, 2, RATE, mode="both")


@given(st.lists(st.integers(1, 700), min_size=1, max_size=12), st.integers(0, 3))
@settings(max_examples=15, deadline=None)
def test_chunking_invariance_property(tiny_backend, sizes, seed):
    x = tone_mix(2500, RATE, seed=seed)
    s = StreamingSettings(2, 1)
    a = _run(StreamingSeparator(tiny_backend, 2, RATE, s, max_block=256), x, sizes)
    b = _run(StreamingSeparator(tiny_backend, 2, RATE, s, max_block=256), x, [len(x)])
    np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.fixture(scope="module")
def downmix_backend(tmp_path_factory):
    from tests.conftest import make_model
    from vocex.model.backends import load_backend, resolve_model

    card = make_model(tmp_path_factory.mktemp("downmix"), name="dm", seed=3, channels="downmix")
    return load_backend(resolve_model(card), "onnx", "cpu", threads=1)


@pytest.fixture(scope="module")
def causal_backend(tmp_path_factory):
    from tests.conftest import make_model
    from vocex.model.backends import load_backend, resolve_model

    card = make_model(tmp_path_factory.mktemp("causal"), name="causal", seed=4, causal=True)
    return load_backend(resolve_model(card), "onnx", "cpu", threads=1)


@pytest.mark.parametrize("K,L", [(1, 0), (4, 0), (2, 2)])
def test_causal_model_streams_as_its_offline_reference(causal_backend, K, L):
    assert causal_backend.card.causal
    x = tone_mix(RATE, RATE, seed=5)
    s = StreamingSettings(K, L)
    ref = reference_vocals(causal_backend, x, s)
    got = separate_streaming(causal_backend, x, RATE, s, block_size=257)
    np.testing.assert_allclose(got, ref, atol=2e-5)
    assert np.abs(ref).max() > 0.01


@pytest.fixture(scope="module", params=["low_delay", "sqrt_hann_low_delay"])
def low_delay_backend(tmp_path_factory, request):
    from tests.conftest import make_model
    from vocex.model.backends import load_backend, resolve_model

    card = make_model(tmp_path_factory.mktemp("low-delay"), name="ld", seed=6, window=request.param)
    return load_backend(resolve_model(card), "onnx", "cpu", threads=1)


@pytest.mark.parametrize("K,L", [(1, 0), (4, 0), (2, 3)])
def test_low_delay_window_streams_as_its_offline_reference(low_delay_backend, K, L):
    x = tone_mix(RATE, RATE, seed=7)
    s = StreamingSettings(K, L)
    got = separate_streaming(low_delay_backend, x, RATE, s, block_size=211)
    ref = reference_vocals(low_delay_backend, x, s)
    np.testing.assert_allclose(got, ref, atol=2e-5)
    assert np.abs(ref).max() > 0.01


@pytest.mark.parametrize("K,L", [(1, 0), (4, 2)])
def test_low_delay_window_saves_n_fft_less_two_hops_of_latency(low_delay_backend, K, L):
    hop = TINY["hop"]
    sep = StreamingSeparator(low_delay_backend, 1, RATE, StreamingSettings(K, L), mode="vocals")
    assert sep.latency_samples == 2 * hop - 1 + (K - 1 + L) * hop
    # the vocal estimate of an impulse peaks latency_samples later, never earlier, and is
    # the same as the offline separation shifted by that much
    x = np.zeros((4000, 1), np.float32)
    x[1500] = 1.0
    y = _run(sep, x, [50])
    ref = reference_vocals(low_delay_backend, x, StreamingSettings(K, L))
    lat = sep.latency_samples
    np.testing.assert_allclose(y[lat:], ref[: len(x) - lat], atol=2e-6)
    assert np.abs(y[: 1500 + lat - 2 * hop]).max() == 0.0


def test_downmix_policy_one_mask_for_all_channels(downmix_backend):
    from vocex.model.separate import Separator

    x = tone_mix(RATE, RATE)
    x[:, 1] *= 0.3  # channels differ
    s = StreamingSettings(2, 1)
    ref = reference_vocals(downmix_backend, x, s)
    got = separate_streaming(downmix_backend, x, RATE, s, block_size=333)
    np.testing.assert_allclose(got, ref, atol=2e-5)
    sep = Separator(downmix_backend).separate(x, RATE)
    assert sep.mask.shape[0] == 1
    # the same mask on both channels: vocals / input ratio per STFT bin is shared, so a
    # channel that is a scaled copy of the other gives a scaled copy of its vocals
    y = np.stack([x[:, 0], 0.3 * x[:, 0]], axis=1)
    v = Separator(downmix_backend).separate(y, RATE).vocals
    np.testing.assert_allclose(v[:, 1], 0.3 * v[:, 0], atol=1e-5)


def test_auto_hop_batch_takes_the_smallest_k_within_the_load_target(tiny_backend):
    from vocex.realtime.settings import AUTO_LOAD, HOP_BATCHES, choose_hop_batch

    card = tiny_backend.card
    hop_s = card.hop / card.sample_rate
    for k in HOP_BATCHES:  # just inside the target at K, just outside at the K before it
        assert choose_hop_batch(card, 0.99 * AUTO_LOAD * k * hop_s) == k
        assert choose_hop_batch(card, 1.01 * AUTO_LOAD * k * hop_s) == (HOP_BATCHES + (HOP_BATCHES[-1],))[HOP_BATCHES.index(k) + 1]
    assert choose_hop_batch(card, 100.0) == HOP_BATCHES[-1]  # too slow for any: the largest K
    # K + L must fit the context window
    assert choose_hop_batch(card, 100.0, lookahead=card.context_frames - 4) == 4


def test_time_inference_measures_the_backend(tiny_backend):
    import time

    from vocex.realtime.timing import time_inference

    class Slow:
        card = tiny_backend.card

        def __call__(self, window):
            assert window.shape == (2, 1, self.card.n_bins, self.card.context_frames)
            time.sleep(0.01)
            return tiny_backend(window)

    assert 0.01 <= time_inference(Slow(), 2, runs=5) < 0.5
    assert time_inference(tiny_backend, 1, runs=5) < time_inference(Slow(), 2, runs=5)


class _Delayed:
    """The tiny model with its mask moved D columns later, under a card that says so."""

    name = "delayed"

    def __init__(self, backend, delay: int) -> None:
        self.base, self.delay = backend, delay
        self.card = backend.card.replace(mask_delay=delay)

    def __call__(self, window):
        m = self.base(window)
        return np.concatenate([np.zeros_like(m[..., : self.delay]), m[..., : -self.delay]], axis=-1)


@pytest.mark.parametrize("K,D", [(1, 1), (4, 2), (2, 3)])
def test_a_delayed_card_streams_each_frame_with_its_own_mask(tiny_backend, K, D):
    x = tone_mix(RATE, RATE, seed=7)
    delayed = _Delayed(tiny_backend, D)
    s = StreamingSettings(K, D)
    # column c + D of the delayed model is column c of the tiny one: the K columns the
    # delayed card is read at, [-K, 0), are the tiny model's lookahead-D columns [-D-K, -D)
    got = separate_streaming(delayed, x, RATE, s, block_size=300)
    np.testing.assert_allclose(got, separate_streaming(tiny_backend, x, RATE, s, block_size=300), atol=2e-5)
    np.testing.assert_allclose(got, reference_vocals(delayed, x, s), atol=2e-5)
    assert StreamingSeparator(delayed, 1, RATE, s).latency_samples == \
        StreamingSeparator(tiny_backend, 1, RATE, s).latency_samples
    with pytest.raises(ValueError, match="lookahead L must be at least"):
        StreamingSeparator(delayed, 1, RATE, StreamingSettings(K, D - 1))


@pytest.fixture(scope="module", params=[0, 1], ids=["delay0", "delay1"])
def stateful(tmp_path_factory, request):
    """A tiny causal model that streams in the stateful form, mask delay 0 or 1: its ONNX
    backend and its eager StatefulUNet (for the offline reference)."""
    from tests.conftest import make_model
    from vocex.model.backends import load_backend, load_unet, resolve_model
    from vocex.model.export import export
    from vocex.model.stateful import StatefulUNet

    folder = tmp_path_factory.mktemp("stateful")
    card = make_model(folder / "plain", name="st", seed=8, causal=True, mask_delay=request.param)
    files = resolve_model(export(resolve_model(card), folder / "out", "st", ["onnx"], stateful=True))
    net = StatefulUNet(load_unet(files), files.card.n_bins, files.card.stateful_peak_frames)
    return load_backend(files, "onnx", "cpu", threads=1), net


def _stateful_reference(backend, net, audio, settings):
    """What the stateful stream computes, offline: the causal network over the whole signal
    (StatefulUNet.offline), frame f masked by column f + mask delay, then the inverse STFT."""
    import torch

    from vocex.model.dsp import extend_mask, istft, soften, stft
    from vocex.model.separate import network_magnitude

    card = backend.card
    n, n_ch = audio.shape
    tail = (settings.hop_batch + settings.lookahead_frames + -(-card.n_fft // card.hop) + 1) * card.hop
    padded = np.concatenate([audio, np.zeros((tail, n_ch), dtype=np.float32)])
    spec = stft(padded, card.n_fft, card.hop, card.window)
    mag = network_magnitude(spec, card)
    mag = np.concatenate([mag, np.zeros(mag.shape[:2] + (card.mask_delay,), np.float32)], axis=2)
    with torch.no_grad():
        masks = net.offline(torch.from_numpy(mag[:, None]))[:, 0, :, card.mask_delay:].numpy()
    masks = soften(np.clip(masks, 0.0, 1.0), settings.mask_temperature)
    return istft(spec * extend_mask(masks, spec.shape[1]), padded.shape[0], card.n_fft, card.hop, card.window)[:n]


@pytest.mark.parametrize("K,extra_L,block", [(1, 0, 257), (2, 0, 1), (4, 0, 300), (4, 2, 64), (3, 1, 1000), (8, 0, 4097)])
def test_stateful_stream_equals_the_causal_network_offline(stateful, K, extra_L, block):
    """Hop batches, host block sizes, lookahead beyond the mask delay, stereo (two network
    items, the tiny card being per-channel) and mono."""
    backend, net = stateful
    assert backend.card.streaming == "stateful"
    s = StreamingSettings(K, backend.card.mask_delay + extra_L)
    for n_ch in (2, 1):
        x = tone_mix(RATE + 333, RATE, n_channels=n_ch, seed=9)
        ref = _stateful_reference(backend, net, x, s)
        got = separate_streaming(backend, x, RATE, s, block_size=block)
        np.testing.assert_allclose(got, ref, atol=2e-5)
        assert np.abs(ref).max() > 0.01


def test_stateful_stream_after_reset_starts_a_new_stream(stateful):
    backend, net = stateful
    s = StreamingSettings(2, backend.card.mask_delay)
    x = tone_mix(5000, RATE, seed=10)
    sep = StreamingSeparator(backend, 2, RATE, s, mode="vocals")
    _run(sep, tone_mix(3000, RATE, seed=11), [500])
    sep.reset()
    y = _run(sep, np.vstack([x, np.zeros((sep.latency_samples, 2), np.float32)]), [128])
    ref = _stateful_reference(backend, net, x, s)
    np.testing.assert_allclose(y[sep.latency_samples :], ref, atol=2e-5)


@pytest.mark.parametrize("K", [1, 2, 4])
def test_stateful_stream_latency_is_exact(stateful, K):
    backend, _ = stateful
    s = StreamingSettings(K, backend.card.mask_delay)
    sep = StreamingSeparator(backend, 1, RATE, s, mode="karaoke", mix=0.0)
    assert sep.latency_samples == s.model_latency(backend.card) == \
        TINY["n_fft"] - 1 + (K - 1 + backend.card.mask_delay) * TINY["hop"]
    x = np.zeros((3000, 1), np.float32)
    x[700] = 1.0
    y = _run(sep, x, [37])
    assert np.argmax(np.abs(y)) == 700 + sep.latency_samples
    # the vocal estimate of the impulse never comes before the stated latency either
    voc = StreamingSeparator(backend, 1, RATE, s, mode="vocals")
    v = _run(voc, x, [37])
    assert np.abs(v[: 700 + sep.latency_samples - TINY["n_fft"] + 1]).max() == 0.0
    assert np.abs(v).max() > 0


def test_stateful_inference_times_step_through_a_whole_period(stateful):
    from vocex.realtime.timing import inference_times, time_inference

    backend, _ = stateful
    assert len(inference_times(backend, 2, runs=5, columns=4)) == 16  # 64 / K steps
    assert len(inference_times(backend, 1, runs=100, columns=1)) == 100
    assert time_inference(backend, 2, runs=5, columns=2) > 0
    assert StreamingSettings(4, backend.card.mask_delay).columns_needed(backend.card) == 4


def test_auto_hop_batch_of_a_stateful_model_times_its_steps_k_by_k(stateful):
    from vocex.realtime.settings import HOP_BATCHES
    from vocex.realtime.timing import auto_hop_batch

    backend, _ = stateful
    k, measured = auto_hop_batch(backend, 2, StreamingSettings(1, backend.card.mask_delay))
    tried = [str(x) for x in HOP_BATCHES[: HOP_BATCHES.index(k) + 1]]
    assert list(measured["slowest_step_ms"]) == tried and min(measured["slowest_step_ms"].values()) > 0
    StreamingSeparator(backend, 2, RATE, StreamingSettings(k, backend.card.mask_delay))  # a K it streams at
