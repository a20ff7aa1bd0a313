import pytest

torch = pytest.importorskip("torch")

from vocex.model.unet import UNet, l1_loss  # noqa: E402


def _expected_params(base: int) -> int:
    """Counted from the paper's description, independently of the module code."""
    w = [base * 2**i for i in range(6)]
    conv = lambda i, o: i * o * 25 + o  # noqa: E731  (weight + bias)
    bn = lambda c: 2 * c  # noqa: E731
    enc = sum(conv(i, o) + bn(o) for i, o in zip([1] + w[:-1], w))
    dec_in = [w[5]] + [2 * c for c in reversed(w[:5])]
    dec_out = list(reversed(w[:5])) + [1]
    dec = sum(conv(i, o) + (bn(o) if o != 1 else 0) for i, o in zip(dec_in, dec_out))
    return enc + dec


def test_paper_unet_layers_and_parameter_count():
    model = UNet()
    convs = [m for m in model.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 32, 64, 128, 256, 512]
    assert all(c.kernel_size == (5, 5) and c.stride == (2, 2) for c in convs)
    leaky = [m for m in model.encoder.modules() if isinstance(m, torch.nn.LeakyReLU)]
    assert len(leaky) == 6 and all(m.negative_slope == 0.2 for m in leaky)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.encoder.modules()) == 6
    deconvs = [m for m in model.decoder.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [(d.in_channels, d.out_channels) for d in deconvs] == [
        (512, 256), (512, 128), (256, 64), (128, 32), (64, 16), (32, 1)]
    assert all(d.kernel_size == (5, 5) and d.stride == (2, 2) for d in deconvs)
    dropouts = [i for i, block in enumerate(model.decoder) if any(isinstance(m, torch.nn.Dropout) for m in block)]
    assert dropouts == [0, 1, 2]
    assert all(m.p == 0.5 for m in model.decoder.modules() if isinstance(m, torch.nn.Dropout))
    assert isinstance(model.decoder[-1][-1], torch.nn.Sigmoid)
    assert sum(p.numel() for p in model.parameters()) == _expected_params(16) == 9_823_313


@pytest.mark.parametrize("base", [2, 8])
def test_width_parameter(base):
    model = UNet(base)
    assert sum(p.numel() for p in model.parameters()) == _expected_params(base)


@pytest.mark.parametrize("bins,frames", [(64, 128), (128, 64)])
def test_causal_unet_reads_no_future_columns(bins, frames):
    torch.manual_seed(0)
    x = torch.rand(2, 1, bins, frames)
    x[..., 0, 0] = 10.0  # the per-patch peak, the same in both inputs
    later = x.clone()
    cut = frames - frames // 4
    later[..., cut:] = torch.rand_like(later[..., cut:])
    changed = {}
    for causal in (False, True):
        model = UNet(4, causal=causal).eval()
        with torch.no_grad():
            changed[causal] = (model(x) - model(later)).abs().amax(dim=(0, 1, 2))
    assert float(changed[True][:cut].max()) == 0.0  # the past is exactly unaffected
    assert float(changed[True][cut:].min()) > 0.0  # and the changed columns do change
    assert float(changed[False][:cut].max()) > 1e-4  # the paper's U-Net reads ahead


def test_causal_and_paper_unets_share_their_parameters():
    paper, causal = UNet(2).state_dict(), UNet(2, causal=True).state_dict()
    assert {k: v.shape for k, v in paper.items()} == {k: v.shape for k, v in causal.items()}
    model = UNet(2, causal=True)
    model.load_state_dict(paper)
    assert model.eval()(torch.rand(1, 1, 64, 64)).shape == (1, 1, 64, 64)


def test_mask_shape_range_and_level_invariance():
    model = UNet(4).eval()
    x = torch.rand(3, 1, 128, 64)
    with torch.no_grad():
        m = model(x)
        m_loud = model(x * 1000)
    assert m.shape == x.shape
    assert float(m.min()) >= 0 and float(m.max()) <= 1
    torch.testing.assert_close(m, m_loud, atol=1e-5, rtol=0)


def test_l1_loss_and_frame_weights():
    mask = torch.full((1, 1, 64, 64), 0.5)
    mix = torch.ones(1, 1, 64, 64)
    voc = torch.zeros(1, 1, 64, 64)
    assert float(l1_loss(mask, mix, voc)) == pytest.approx(0.5)
    voc[..., -8:] = 0.5  # perfect on the newest 8 columns
    w = torch.ones(64)
    w[-8:] += 7
    assert float(l1_loss(mask, mix, voc, w)) < float(l1_loss(mask, mix, voc))


def test_delayed_l1_scores_mask_column_t_against_frame_t_minus_d():
    from vocex.model.unet import delayed_l1

    mix = torch.rand(2, 1, 64, 64) + 0.1
    voc = 0.3 * mix
    right = torch.full_like(mix, 0.3)  # the true mask, 0.3 everywhere...
    right[..., 2:] = (voc / mix)[..., :-2]  # ...moved 2 columns later
    assert float(delayed_l1(right, mix, voc, 2)) == pytest.approx(0.0, abs=1e-6)
    varied = voc * torch.rand_like(voc)
    late = torch.zeros_like(mix)
    late[..., 2:] = (varied / mix)[..., :-2]
    assert float(delayed_l1(late, mix, varied, 2)) == pytest.approx(0.0, abs=1e-6)
    assert float(delayed_l1(late, mix, varied, 0)) > 0.01
    assert float(delayed_l1(late, mix, varied)) == float(l1_loss(late, mix, varied))
