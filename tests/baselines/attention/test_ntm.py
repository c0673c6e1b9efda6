"""Read-only NTM head (Annabi et al.'s configuration): the initial read against an independent
re-implementation of the released module, the content energy against autograd, learned sharpening on
corrupted cues (untrained and tiny-learning-rate negative controls), code space, bad inputs, save/load."""

import math

import pytest
import torch

import varmem
from varmem import NTM

D = 16


def _data(n, seed, scale=0.3):
    return scale * torch.randn(n, D, generator=torch.Generator().manual_seed(seed))


def _reference_read(M, z, Wk, Wg, bg, eps=1e-5):
    """Annabi's ``models.py: NTM.forward`` with a ``G``-output gate layer (bmm / repeat form)."""
    B, N, G = z.shape[0], M.shape[0], Wg.shape[0]
    Mb = M.unsqueeze(0).expand(B, -1, -1)
    k = (z @ Wk.T).reshape(B, 1, D)
    g = torch.exp(z @ Wg.T + bg).unsqueeze(1).repeat(1, N, 1)  # [B, N, G]
    Mn = Mb / torch.norm(Mb, dim=-1).unsqueeze(-1).repeat(1, 1, D)
    kn = k / torch.norm(k, dim=-1).unsqueeze(-1).repeat(1, 1, D)
    w = torch.softmax(torch.bmm(Mn, kn.transpose(1, 2)), dim=1)  # [B, N, 1]
    w = torch.softmax(g * torch.log(1e-5 + w), dim=1)  # [B, N, G]
    r = torch.bmm(w.transpose(1, 2), Mb)  # [B, G, D]
    assert G >= 1
    return r.mean(dim=1)


def test_initial_read_matches_the_released_module_and_is_a_near_uniform_average():
    X, z = _data(30, 0), _data(5, 1)
    ntm = NTM(D).write(X)
    r = ntm.retrieve(z)
    eye, zeros = torch.eye(D), torch.zeros(D, D)
    torch.testing.assert_close(r.pattern, _reference_read(X, z, eye, zeros, torch.zeros(D)), rtol=1e-12, atol=1e-12)
    # g = 1: sharpened weights are ∝ ε + softmax(cos)
    cos = (z / z.norm(dim=-1, keepdim=True)) @ (X / X.norm(dim=-1, keepdim=True)).T
    w = torch.softmax(cos, -1) + 1e-5
    torch.testing.assert_close(r.weights, w / w.sum(-1, keepdim=True), rtol=1e-12, atol=1e-12)
    assert float(r.weights.max()) < math.e**2 / 30  # cosines in [-1, 1]: at most e² times uniform
    # trained-looking gates: still the reference, for both variants
    g = torch.Generator().manual_seed(2)
    for variant, G in (("annabi", D), ("textbook", 1)):
        ntm = NTM(D, variant=variant).write(X)
        with torch.no_grad():
            ntm.W_k.add_(0.2 * torch.randn(D, D, generator=g))
            ntm.W_g.copy_(torch.randn(G, D, generator=g))
            ntm.b_g.copy_(torch.randn(G, generator=g))
        expected = _reference_read(X, z, ntm.W_k.detach(), ntm.W_g.detach(), ntm.b_g.detach())
        torch.testing.assert_close(ntm.read(z), expected, rtol=1e-10, atol=1e-12)


def test_addressing_is_a_distribution_and_clean_cues_find_their_item():
    X = _data(40, 3)
    r = NTM(D).write(X).retrieve(X)
    torch.testing.assert_close(r.weights.sum(-1), torch.ones(40))
    assert torch.equal(r.index, torch.arange(40))
    assert r.steps == 1 and r.converged is None and r.method == "attention"


def test_energy_matches_closed_form_gradient_and_bounds():
    X, z = _data(25, 4), _data(6, 5).requires_grad_(True)
    ntm = NTM(D).write(X)
    with torch.no_grad():
        ntm.W_k.add_(0.3 * torch.randn(D, D, generator=torch.Generator().manual_seed(6)))
    E = ntm.energy(z)
    (grad,) = torch.autograd.grad(E.sum(), z)
    with torch.no_grad():
        k = z @ ntm.W_k.T
        kn, Xn = k / k.norm(dim=-1, keepdim=True), X / X.norm(dim=-1, keepdim=True)
        c = kn @ Xn.T
        w = torch.softmax(c, -1)
        # ∇E = -Σ_i w_i W_kᵀ (x̂_i - c_i k̂) / ‖k‖
        dk = -((w @ Xn) - (w * c).sum(-1, keepdim=True) * kn) / k.norm(dim=-1, keepdim=True)
        torch.testing.assert_close(grad, dk @ ntm.W_k, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(E, math.log(25) - torch.logsumexp(c, -1))
        assert (E.abs() <= 1 + 1e-12).all()


def _recall_error(ntm, X, cue):
    return float((ntm.retrieve(cue).pattern - X).pow(2).sum(-1).mean() / X.pow(2).sum(-1).mean())


def test_learned_sharpening_improves_recall_on_corrupted_cues():
    train, X = _data(1000, 7), _data(100, 8)
    cue = X + 0.15 * torch.randn(X.shape, generator=torch.Generator().manual_seed(9))
    untrained = NTM(D).write(X)
    star = NTM(D).write(X)
    res = star.fit(train, corruption="white", level=0.15, epochs=10, lr=5e-2, seed=0)
    tiny = NTM(D).write(X)
    tiny.fit(train, corruption="white", level=0.15, epochs=1, lr=1e-9, seed=0)  # negative control: no learning
    e0, e1, e_tiny = (_recall_error(m, X, cue) for m in (untrained, star, tiny))
    assert e1 < 0.05 * e0  # measured 0.002 vs 0.87: the gates learn to sharpen
    assert abs(e_tiny - e0) < 1e-3 * e0
    assert float(star.gates(cue).detach().mean()) > 5.0  # g grew from 1
    assert res.losses[-10:].mean() < 0.1 * res.losses[:10].mean()
    assert torch.equal(star.items, X)


def test_code_space_with_an_encoder_and_bad_inputs():
    lm = varmem.LatentMemory(D, code_dim=4, hidden=(16,))
    pixels = torch.rand(100, D, generator=torch.Generator().manual_seed(10))
    ntm = NTM(4)
    res = ntm.fit(pixels, "drop", 0.25, encoder=lm, epochs=1, memory_size=50, lr=1e-2)
    assert res.steps == 2 and torch.isfinite(res.losses).all()
    codes = varmem.encode_codes(lm, pixels)
    ntm.write(codes[:20])
    assert ntm.retrieve(codes[:2]).weights.shape == (2, 20)
    state = {k: v.clone() for k, v in ntm.state_dict().items()}
    for items, err in ((torch.ones(2, 5), ValueError), (torch.ones(2, 4, dtype=torch.int32), TypeError),
                       (torch.tensor([[0.0, float("nan"), 0.0, 0.0]]), ValueError)):
        with pytest.raises(err):
            ntm.write(items)
    with pytest.raises(ValueError, match="nothing observed"):
        ntm.retrieve(codes[:1], torch.zeros(4, dtype=torch.bool))
    with pytest.raises(ValueError, match="unknown retrieval method"):
        ntm.retrieve(codes[:1], method="hybrid")
    with pytest.raises(ValueError, match="unknown option"):
        ntm.retrieve(codes[:1], beta=3.0)
    with pytest.raises(ValueError, match="memory_size"):
        ntm.fit(codes, memory_size=1000)
    for k, v in ntm.state_dict().items():
        assert torch.equal(v, state[k]), k
    with pytest.raises(ValueError, match="is empty"):
        NTM(4).retrieve(codes[:1])
    assert not hasattr(ntm, "model")  # a trained deterministic reader: no Pyro model, no stub
    with pytest.raises(ValueError, match="variant"):
        NTM(4, variant="full")
    with pytest.raises(ValueError, match="eps"):
        NTM(4, eps=0.0)


def test_zero_cue_reads_the_uniform_average_and_save_load(tmp_path):
    X = _data(12, 11)
    ntm = NTM(D, variant="textbook").write(X)
    r = ntm.retrieve(torch.zeros(1, D))  # zero key: cosine 0 with every item (no NaN)
    torch.testing.assert_close(r.pattern, X.mean(0, keepdim=True))
    ntm.fit(_data(100, 12), "white", 0.1, epochs=1, memory_size=50, lr=1e-2)
    back = varmem.load(varmem.save(ntm, tmp_path / "ntm.safetensors"))
    assert isinstance(back, NTM) and back.config() == ntm.config() and back.b_g.shape == (1,)
    cue = X[:4] + 0.05
    for k, v in ntm.state_dict().items():
        assert torch.equal(back.state_dict()[k], v), k
    torch.testing.assert_close(back.retrieve(cue).pattern, ntm.retrieve(cue).pattern, rtol=1e-13, atol=1e-15)
