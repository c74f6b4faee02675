"""What each rule does beyond the contract (test_contract.py) and beyond equal numbers
(test_vs_*.py): Sophia's sign descent and Gauss-Newton-Bartlett estimator, schedule-free's
modes, LAMB's per-tensor step, Adafactor's factored state, Muon's orthogonalisation and its
parameter split, Shampoo's roots and grafting, SOAP's per-tensor start, defaults and the
bytes of state.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from catalogue import ENTRIES, MATRICES
from pairs import TinyLM, assert_close, drive, make_params

import optlib
import optlib.quantized

# ---- SophiaG -----------------------------------------------------------------------------


def test_sophia_before_any_hessian_is_sign_descent(float64):
    p = torch.nn.Parameter(torch.zeros(5))
    opt = optlib.SophiaG([p], lr=0.1, weight_decay=0.0)
    p.grad = torch.tensor([3.0, -1e-3, 0.0, 2.0, -5.0])
    opt.step()
    torch.testing.assert_close(p.detach(), -0.1 * torch.sign(p.grad))


def test_sophia_refuses_a_batch_size_of_zero():
    with pytest.raises(ValueError, match="Invalid bs value: 0"):
        optlib.SophiaG(make_params()).step(bs=0)


def _classifier(seed=0, classes=3, features=4):
    torch.manual_seed(seed)
    return torch.nn.Linear(features, classes, bias=False)


def test_gnb_samples_labels_from_the_model_and_restores_grads(float64):
    model = _classifier()
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    opt = optlib.SophiaG(model.parameters(), betas=(0.9, 0.5))
    model.weight.grad = torch.full_like(model.weight, 7.0)         # the training step's grads
    assert optlib.gnb_update_hessian(opt, model, x, generator=torch.Generator().manual_seed(2))
    assert torch.equal(model.weight.grad, torch.full_like(model.weight, 7.0))
    # the same computation by hand
    logits = x @ model.weight.T
    y_hat = torch.multinomial(torch.softmax(logits, -1), 1,
                              generator=torch.Generator().manual_seed(2)).squeeze(-1)
    g, = torch.autograd.grad(torch.nn.functional.cross_entropy(logits, y_hat), model.weight)
    torch.testing.assert_close(opt.state[model.weight]["hessian"], 0.5 * g * g)
    # clipping applies to the sampled gradient
    clipped = optlib.SophiaG(model.parameters(), betas=(0.9, 0.5))
    optlib.gnb_update_hessian(clipped, model, x, max_grad_norm=1e-3,
                              generator=torch.Generator().manual_seed(2))
    g_clipped = g * min(1.0, 1e-3 / (g.norm().item() + 1e-6))
    torch.testing.assert_close(clipped.state[model.weight]["hessian"], 0.5 * g_clipped**2)
    # the authors' schedule: refresh after steps k-1, 2k-1, ...
    ran = [optlib.gnb_update_hessian(opt, model, x, step=t, every=10) for t in range(20)]
    assert [t for t, r in enumerate(ran) if r] == [9, 19]


def test_gnb_leaves_other_optimizers_gradients_alone(float64):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    opt = optlib.SophiaG(model[2].parameters())          # the first layer belongs to another
    model[0].weight.grad = torch.ones_like(model[0].weight)
    optlib.gnb_update_hessian(opt, model, torch.randn(6, 4))
    assert torch.equal(model[0].weight.grad, torch.ones_like(model[0].weight))
    assert model[0].bias.grad is None and model[2].weight.grad is None
    assert opt.state[model[2].weight]["hessian"].abs().sum() > 0


def test_gnb_estimates_the_gauss_newton_diagonal(float64):
    """E[B ĝ⊙ĝ] is the diagonal of the Gauss-Newton matrix of the mean loss; for a linear
    softmax classifier that is mean_i x_id² p_ic (1 − p_ic)."""
    model = _classifier(seed=3)
    x = torch.randn(2, 4, generator=torch.Generator().manual_seed(4))
    beta2, draws = 0.999, 2000          # an average of ~1500 draws, effectively
    opt = optlib.SophiaG(model.parameters(), betas=(0.9, beta2))
    gen = torch.Generator().manual_seed(5)
    for _ in range(draws):
        optlib.gnb_update_hessian(opt, model, x, generator=gen)
    estimate = len(x) * opt.state[model.weight]["hessian"] / (1 - beta2**draws)
    probs = torch.softmax(x @ model.weight.detach().T, -1)
    exact = ((probs * (1 - probs)).T @ (x * x)) / len(x)
    torch.testing.assert_close(estimate.sum(), exact.sum(), rtol=0.05, atol=0)
    torch.testing.assert_close(estimate, exact, rtol=0.2, atol=0.02 * exact.max().item())


# ---- AdamWScheduleFree -------------------------------------------------------------------


def test_schedule_free_refuses_steps_in_eval_mode():
    opt = optlib.AdamWScheduleFree(make_params())
    with pytest.raises(RuntimeError, match=r"eval mode.*optimizer\.train\(\)"):
        opt.step()                                             # a new optimizer is in eval mode
    opt.train()
    opt.eval()
    with pytest.raises(RuntimeError, match="eval mode"):
        opt.step()


def test_schedule_free_eval_train_round_trip(float64):
    params = make_params()
    opt = ENTRIES["AdamWScheduleFree"].build(params, lr=0.1)
    for _ in range(3):                   # after one step x = y = z: take a few
        for p in params:
            p.grad = torch.randn_like(p)
        opt.step()
    y = [p.detach().clone() for p in params]
    opt.eval()
    assert not all(torch.equal(p, q) for p, q in zip(params, y, strict=True))
    opt.train()
    assert_close(params, y, rtol=1e-14, atol=1e-15)


# ---- LAMB --------------------------------------------------------------------------------


def test_lamb_moves_every_tensor_by_lr_times_its_norm(float64):
    params = make_params()
    opt = optlib.LAMB(params, lr=0.01, weight_decay=0.1)
    before = [p.detach().clone() for p in params]
    for p in params:
        p.grad = torch.randn_like(p) * 1000.0        # the gradient's scale does not matter
    opt.step()
    for p, q in zip(params, before, strict=True):
        assert (p - q).norm().item() == pytest.approx(0.01 * q.norm().item(), rel=1e-12)


# ---- Adafactor and Muon ------------------------------------------------------------------


def test_adafactor_state_is_factored():
    p = torch.nn.Parameter(torch.randn(30, 40))
    opt = optlib.Adafactor([p])
    p.grad = torch.randn(30, 40)
    opt.step()
    assert optlib.state_bytes(opt) == 4 * (30 + 40) + 4     # rows + columns + step


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_adafactor_stacks_give_each_tensors_own_numbers(dtype):
    """Adafactor computes the scaled gradients of same-shaped tensors as one stack (one
    reduction per statistic for all of them): bit for bit the numbers of each tensor
    alone (every tensor a chunk of its own), for matrices, 3-D tensors, vectors and
    0-dim tensors, with step counts that differ (one tensor skips steps) and an
    infinite gradient entry, in bfloat16 too (its rsqrt rounds by position in a tensor,
    so the stack's rsqrt runs tensor by tensor)."""
    shapes = [(20, 30)] * 5 + [(7, 3)] * 3 + [(2, 4, 5)] * 2 + [(50,)] * 3 + [()] * 2
    gen = torch.Generator().manual_seed(0)
    start = [torch.randn(s, generator=gen).to(dtype) for s in shapes]
    runs = []
    for limit in (None, 1):                   # one call (stacks), each tensor alone
        params = [torch.nn.Parameter(x.clone()) for x in start]
        opt = optlib.Adafactor(params, lr=0.05, weight_decay=0.1)
        opt.eager_chunk_bytes = limit
        runs.append((opt, params))
    for step in range(8):
        grads = [torch.randn(s, generator=gen).to(dtype) for s in shapes]
        if step == 6:
            grads[1][0, 0] = float("inf")
        for opt, params in runs:
            for i, (p, g) in enumerate(zip(params, grads, strict=True)):
                p.grad = None if (i == 2 and step % 3 == 1) else g.clone()
            opt.step()
    (a, pa), (b, pb) = runs
    for x, y in zip(pa, pb, strict=True):
        assert torch.equal(x.nan_to_num(), y.nan_to_num()) and torch.equal(x.isnan(), y.isnan())
        for key, value in a.state[x].items():
            assert torch.equal(value.nan_to_num(), b.state[y][key].nan_to_num())


def test_newton_schulz_orthogonalises():
    g = torch.randn(8, 32, generator=torch.Generator().manual_seed(0))
    o = optlib.matrix.zeropower_via_newtonschulz(g).float()
    s = torch.linalg.svdvals(o)
    assert 0.6 < s.min() and s.max() < 1.3                 # all singular values near 1
    assert torch.linalg.svdvals(g).max() / torch.linalg.svdvals(g).min() > 2


def test_newton_schulz_leaves_a_bfloat16_input_unchanged():
    # G.bfloat16() is G itself for a bfloat16 G: the normalisation must not write into it
    # (for Muon with bfloat16 weights and nesterov=False, G is the momentum buffer)
    G = torch.randn(8, 4, generator=torch.Generator().manual_seed(0)).bfloat16()
    before = G.clone()
    optlib.matrix.zeropower_via_newtonschulz(G)
    assert torch.equal(G, before)
    w = torch.nn.Parameter(torch.randn(8, 4).bfloat16())
    opt = optlib.Muon([w], lr=0.02, nesterov=False)
    w.grad = torch.randn(8, 4).bfloat16()
    opt.step()
    # b = lerp(0, g, 1 − β) on the first step, as torch.optim.Muon; not rescaled by the iteration
    assert torch.equal(opt.state[w]["momentum_buffer"], torch.zeros_like(w.grad).lerp_(w.grad, 0.05))


#: Shapes the stacked iteration is checked on: wide, tall, square, odd, the peer table's.
NS_SHAPES = ((8, 8), (8, 12), (12, 8), (17, 33), (128, 32), (64, 64), (100, 50), (50, 100))

#: Run in a fresh process under the book's pinned environment (and here, unpinned).
_STACKED_EQUALS_ONE_BY_ONE = """
import torch
from optlib.book import numerics
from optlib.matrix import zeropower_via_newtonschulz as ns
numerics.apply()
gen = torch.Generator().manual_seed(0)
for dtype in (torch.float32, torch.bfloat16):
    for shape in SHAPES:
        for n in (1, 3):
            G = torch.randn(n, *shape, generator=gen).to(dtype)
            assert torch.equal(ns(G), torch.stack([ns(g) for g in G])), (dtype, n, shape)
print("equal")
"""


def test_stacked_newton_schulz_equals_one_matrix_at_a_time():
    """Muon orthogonalises matrices of one shape as one stack: bit for bit the numbers of
    the matrices one by one, in float32 and bfloat16, with oneDNN on and off (off, torch
    runs each matrix's own product; on, oneDNN's batched one for the larger stacks)."""
    code = _STACKED_EQUALS_ONE_BY_ONE.replace("SHAPES", repr(NS_SHAPES))
    for enabled in (True, False):
        with warnings.catch_warnings():     # flags() sets oneDNN's TF32 switch too, and warns
            warnings.filterwarnings("ignore", message="TF32 acceleration on top of oneDNN")
            with torch.backends.mkldnn.flags(enabled=enabled):
                exec(code, {})


@pytest.mark.skipif(torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"),
                    reason="the book's pinned environment needs an x86-64 CPU with AVX2")
def test_stacked_newton_schulz_equals_one_by_one_under_the_books_pins():
    """The same under the pins the chapters run under (set before torch is imported)."""
    import subprocess
    import sys

    from optlib.book import numerics

    out = subprocess.run([sys.executable, "-c",
                          _STACKED_EQUALS_ONE_BY_ONE.replace("SHAPES", repr(NS_SHAPES))],
                         env=numerics.kernel_environment("record"), capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "equal", out.stderr


def test_muon_steps_same_shaped_matrices_as_each_alone(monkeypatch):
    """A Muon over matrices of repeated shapes (stacked) ends where one Muon per matrix
    does, bit for bit; also when the stacks are cut (STACK_VALUES) and with bfloat16
    weights."""
    shapes = [(12, 8), (8, 10), (12, 8), (12, 8), (5, 5), (8, 10), (5, 5)]
    for dtype, stack_values in ((torch.float32, 2**24), (torch.float32, 200),
                                (torch.bfloat16, 2**24)):
        monkeypatch.setattr(optlib.matrix, "STACK_VALUES", stack_values)
        gen = torch.Generator().manual_seed(0)
        start = [torch.randn(s, generator=gen).to(dtype) for s in shapes]
        together = [torch.nn.Parameter(x.clone()) for x in start]
        alone = [torch.nn.Parameter(x.clone()) for x in start]
        opt = optlib.Muon(together, lr=0.02, weight_decay=0.1)
        opts = [optlib.Muon([p], lr=0.02, weight_decay=0.1) for p in alone]
        for _ in range(3):
            for p, q in zip(together, alone, strict=True):
                p.grad = torch.randn(p.shape, generator=gen).to(dtype)
                q.grad = p.grad.clone()
            opt.step()
            for o in opts:
                o.step()
        assert all(torch.equal(p, q) for p, q in zip(together, alone, strict=True)), dtype


def test_muon_stacks_matrices_by_shape(monkeypatch):
    """One stack per shape (cut at STACK_VALUES values), in order of first appearance; a
    matrix with a side under 8 alone (torch's batched product of it adds in another order),
    and one not on the CPU."""
    shapes = [(12, 8), (8, 10), (12, 8), (12, 8), (5, 5), (8, 10), (5, 5), (7, 40)]
    params = [torch.zeros(s) for s in shapes]
    assert list(optlib.matrix._same_shapes(params)) == [
        ((12, 8), [0, 2, 3]), ((8, 10), [1, 5]), ((5, 5), [4]), ((5, 5), [6]), ((7, 40), [7])]
    monkeypatch.setattr(optlib.matrix, "STACK_VALUES", 200)     # two 12 x 8 matrices a stack
    assert [i for _, i in optlib.matrix._same_shapes(params)] == [
        [0, 2], [3], [1, 5], [4], [6], [7]]
    elsewhere = [torch.zeros(12, 8, device="meta")] * 2      # not on the CPU: each alone
    assert [i for _, i in optlib.matrix._same_shapes(elsewhere)] == [[0], [1]]


def test_muon_refuses_non_matrices_and_points_to_adamw():
    with pytest.raises(ValueError, match=r"Muon only supports 2D parameters.*AdamW"):
        optlib.Muon([torch.nn.Parameter(torch.zeros(3))])
    opt = optlib.Muon(make_params(MATRICES))
    with pytest.raises(ValueError, match="AdamW"):
        opt.add_param_group(dict(params=[torch.nn.Parameter(torch.zeros(2, 2, 2))]))


def test_muon_param_groups_split():
    model = TinyLM()
    muon, adamw = optlib.muon_param_groups(model)
    assert {id(p) for p in muon} == {id(model.hidden.weight), id(model.hidden2.weight)}
    assert len(muon) + len(adamw) == len(list(model.parameters()))
    assert id(model.embed.weight) in {id(p) for p in adamw}
    assert id(model.head.weight) in {id(p) for p in adamw}


# ---- Shampoo and SOAP --------------------------------------------------------------------


def test_shampoo_roots_are_inverse_fourth_roots(float64):
    """P^4 H = I for both factors of a matrix; P^6 H = I for a tensor of order 3."""
    W = torch.nn.Parameter(torch.randn(5, 3))
    T = torch.nn.Parameter(torch.randn(2, 3, 4))
    opt = optlib.Shampoo([W, T])
    drive(opt, [W, T], 4, seed=0)
    for p, power in ((W, 4), (T, 6)):
        for H, P in zip(opt.state[p]["factors"], opt.state[p]["roots"], strict=True):
            eye = torch.eye(H.shape[0])
            torch.testing.assert_close(torch.linalg.matrix_power(P, power) @ H, eye,
                                       rtol=0, atol=1e-9)


def test_shampoo_grafted_step_has_the_graft_norm(float64):
    """With graft="sgd" and no momentum, every tensor's step has the norm lr * ||G||."""
    params = make_params(((4, 5), (6,), (2, 3, 4)))
    opt = optlib.Shampoo(params, lr=0.1, graft="sgd")
    for _ in range(3):
        before = [p.detach().clone() for p in params]
        grads = [torch.randn(p.shape) for p in params]
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        opt.step()
        for p, q, g in zip(params, before, grads, strict=True):
            assert (p - q).norm().item() == pytest.approx(0.1 * g.norm().item(), rel=1e-12)


def test_shampoo_graft_and_momentum_may_be_switched_on_later(float64):
    """A group that starts with graft=None and no momentum and switches both on (by hand,
    or by a scheduler that raises momentum) gets its buffers then, as zeros."""
    params = make_params(((4, 5), (3,)))
    opt = optlib.Shampoo(params, graft=None)
    drive(opt, params, 2, seed=0)
    assert "exp_avg_sq" not in opt.state[params[0]]
    opt.param_groups[0].update(graft="adam", momentum=0.5)
    drive(opt, params, 2, seed=1)
    for p in params:
        assert {"exp_avg_sq", "momentum_buffer"} <= set(opt.state[p])
        assert torch.isfinite(p).all()


def test_soap_per_tensor_first_step_like_the_authors(float64):
    """A tensor whose first gradient comes at a later step only starts its basis then
    (the authors' code; pytorch-optimizer would update it at once) and its bias
    corrections count its own updates."""
    a, b = make_params(((4, 5), (3, 2)))
    opt = optlib.SOAP([a, b], lr=0.1)
    a.grad = torch.ones_like(a)
    opt.step()
    opt.step()
    assert opt.state[a]["step"].item() == 1 and b not in opt.state
    before = b.detach().clone()
    b.grad = torch.ones_like(b)
    opt.step()
    assert torch.equal(b, before) and opt.state[b]["step"].item() == 0
    assert opt.state[a]["step"].item() == 2
    opt.step()
    assert not torch.equal(b, before) and opt.state[b]["step"].item() == 1


def test_defaults_are_the_documented_ones():
    shampoo = optlib.Shampoo(make_params()).defaults
    assert {k: shampoo[k] for k in ("lr", "momentum", "weight_decay", "precondition_frequency",
                                    "eps", "graft")} == dict(
        lr=1e-3, momentum=0.0, weight_decay=0.0, precondition_frequency=1, eps=1e-6, graft="adam")
    soap = optlib.SOAP(make_params()).defaults
    assert {k: soap[k] for k in ("lr", "betas", "shampoo_beta", "eps", "weight_decay",
                                 "precondition_frequency", "max_precond_dim")} == dict(
        lr=3e-3, betas=(0.95, 0.95), shampoo_beta=-1, eps=1e-8, weight_decay=0.01,
        precondition_frequency=10, max_precond_dim=10000)


def test_state_bytes_match_the_layout():
    """Shampoo (Adam graft, no momentum) on a 6 x 4 matrix and a 5-vector, float32: factors
    and roots 2 (36 + 16), v 24, counter; the vector's diagonal factor, root and v 3 x 5.
    SOAP: m, v (2 x 24), GG and Q 2 (36 + 16); the vector m, v only."""
    def one_step(opt, params):
        for p in params:
            p.grad = torch.ones_like(p)
        opt.step()
        return optlib.state_bytes(opt)

    params = make_params(((6, 4), (5,)), dtype=torch.float32)
    assert one_step(optlib.Shampoo(params), params) == 4 * (2 * 52 + 24 + 15) + 2 * 4
    params = make_params(((6, 4), (5,)), dtype=torch.float32)
    assert one_step(optlib.SOAP(params), params) == 4 * (2 * 24 + 2 * 52 + 10) + 2 * 4


def test_matrix_step_times_rows():
    from optlib.book import performance as perf

    rows = perf.matrix_step_times(shape=(6, 4), count=2, reps=1, block=10)
    assert [r["optimizer"] for r in rows] == list(perf._matrix_optimizers())
    for r in rows:
        assert r["ms"] > 0 and r["first_ms"] > 0
    assert next(r for r in rows if r["optimizer"] == "AdamW")["vs_adamw"] == 1.0
    text = perf.format_matrix_step_times(rows)
    assert text.splitlines()[0].split() == ["optimizer", "ms/step", "vs", "AdamW", "first",
                                            "step", "ms"]
    assert len(text.splitlines()) == len(rows) + 1
