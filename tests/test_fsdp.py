"""Every optlib optimizer under FSDP2 (``fully_shard``: DTensor parameters sharded by rows)
and with ``torch.distributed.checkpoint`` (gloo, 2 CPU processes on 127.0.0.1).

One spawn runs every optimizer (about a second each): 4 float64 steps on an MLP
whose odd widths shard unevenly, compared with one process on the combined batches; the
optimizer step's communication; a checkpoint written halfway, resumed, loaded into one
process and back. Collectives time out after ``D.TIMEOUT``, so a stuck process fails the
test instead of hanging it.
"""

import math

import pytest
import torch
from catalogue import ENTRIES

import optlib
from optlib import _torch_version, sharded
from optlib.book import distributed as D
from optlib.book.compare import max_difference

if not (torch.distributed.is_available() and torch.distributed.is_gloo_available()):
    pytest.skip("this torch build has no torch.distributed with the gloo backend",
                allow_module_level=True)
if not _torch_version.has("torch.distributed.fsdp.fully_shard on the CPU"):
    pytest.skip(f"FSDP2 (fully_shard) on the CPU needs torch >= 2.7; this is torch {torch.__version__}",
                allow_module_level=True)

WORLD_SIZE = 2
#: float64 parameters after 4 steps: measured differences from one process are at most
#: 3e-15 (the gradient is averaged over the ranks in another order); Muon's bfloat16
#: Newton-Schulz iteration sees the same rounded matrix and gives the same result; Shampoo
#: 4e-14 and SOAP 1e-14 (eigendecompositions of the gathered factors).
TOLERANCE = 1e-12

HYPER = {
    "SGD": dict(lr=0.1, momentum=0.9, weight_decay=1e-2, nesterov=True),
    "Adagrad": dict(lr=0.1),
    "RMSprop": dict(lr=1e-2, momentum=0.5, centered=True),
    "Adadelta": dict(lr=1.0, weight_decay=1e-2),
    "Adam": dict(lr=1e-2, amsgrad=True),
    "AdamW": dict(lr=1e-2, weight_decay=0.1),
    "NAdam": dict(lr=1e-2),
    "RAdam": dict(lr=1e-2),
    "Adamax": dict(lr=1e-2),
    "Lion": dict(lr=1e-3, weight_decay=0.1),
    "SophiaG": dict(lr=1e-2),
    "LAMB": dict(lr=1e-2, weight_decay=0.1),
    "LARS": dict(lr=1.0, weight_decay=1e-3),
    "Adafactor": dict(lr=1e-2, weight_decay=0.1),
    "Muon": dict(lr=2e-2),
    "MuonWithAdamW": dict(muon_kwargs=dict(lr=2e-2), adamw_kwargs=dict(lr=1e-2)),
    "AdamWScheduleFree": dict(lr=1e-2, warmup_steps=2),
    # The MLP's tensors are below the default min_8bit_size: full-precision moments.
    "Adam8bit": dict(lr=1e-2),
    "Shampoo": dict(lr=1e-2, momentum=0.5, weight_decay=1e-2, precondition_frequency=2),
    # Factors only of size <= 16: the 31x16 weight's 16x16 and the 5x32 weight's 5x5, which
    # its gradients make nonsingular from the first step (see the test of singular factors
    # below); the 32x31 weight and the biases take sharded Adam steps. A basis refresh at 2.
    "SOAP": dict(lr=1e-2, precondition_frequency=2, max_precond_dim=16),
}
#: Adam8bit with 8-bit (block-quantized) moments on shards: refused with blocks that run on
#: across rows (QUANTIZED), sharded with row blocks (ROW_BLOCKS: rows of 16, 31 and 32
#: values in blocks of 16, so a row holds one or two blocks, the last one shorter).
QUANTIZED = D.Job("Adam8bit", dict(lr=1e-2, block_size=64, min_8bit_size=64), steps=4,
                  widths=D.FSDP_WIDTHS)
ROW_BLOCKS = D.Job("Adam8bit", dict(lr=1e-2, block_size=16, min_8bit_size=64, row_blocks=True),
                   steps=4, widths=D.FSDP_WIDTHS)
#: Muon on an MLP with two 31 x 31 hidden matrices (sharded 16 + 15 rows): it gathers and
#: orthogonalises them as one stack, and each rank keeps its rows of each.
MUON_STACKED = D.Job("Muon", dict(lr=2e-2), steps=4, widths=(16, 31, 31, 31, 5))
JOBS = {name: D.Job(name, hyper, steps=4, widths=D.FSDP_WIDTHS) for name, hyper in HYPER.items()}


@pytest.fixture(scope="module")
def runs():
    """Spawn the processes once and run every optimizer (and the memory table's AdamW)."""
    results, memory = D.scaling_out([*JOBS.values(), QUANTIZED, ROW_BLOCKS, MUON_STACKED], ["AdamW"],
                                    widths=D.FSDP_WIDTHS, world_size=WORLD_SIZE)
    return dict(zip([*JOBS, "quantized", "row blocks", "muon stacked"], results, strict=True)), memory


def test_every_optimizer_is_covered():
    """Every optimizer of the catalogue (tests/catalogue.py), and every class optlib exports."""
    classes = {name for name in optlib.__all__ if isinstance(getattr(optlib, name), type)
               and issubclass(getattr(optlib, name), torch.optim.Optimizer)}
    assert classes - {"Optimizer"} <= set(HYPER)
    assert set(ENTRIES) == set(HYPER)


def test_the_model_shards_unevenly():
    """31 and 5 rows over 2 ranks: the case where per-shard statistics or blocks go wrong."""
    assert any(w % WORLD_SIZE for w in D.FSDP_WIDTHS[1:])


@pytest.mark.parametrize("name", list(HYPER))
def test_fsdp2_equals_one_process_on_the_combined_batch(name, runs):
    r = runs[0][name]
    assert r.error is None, r.error
    single = D.train_single(r.job, WORLD_SIZE)
    assert max_difference(r.params, single) < TOLERANCE
    start = [p.detach() for p in D.build_model(0, r.job.widths).parameters()]
    assert max_difference(r.params, start) > 1e-3          # and training did move them


@pytest.mark.parametrize("name", list(HYPER))
def test_state_is_sharded(name, runs):
    """Each rank stores its rows of the state: less than one process stores."""
    r = runs[0][name]
    model = D.build_model(0, r.job.widths)
    optimizer = D.make_optimizer(r.job, model)
    D.train(model, optimizer, r.job, range(1), WORLD_SIZE)
    assert 0 < max(r.state_bytes) < optlib.state_bytes(optimizer)


@pytest.mark.parametrize("name", list(HYPER))
def test_checkpoint_resumes_bit_exact(name, runs):
    r = runs[0][name]
    assert r.error is None, r.error
    assert r.resumed_exact


@pytest.mark.parametrize("name", list(HYPER))
def test_checkpoint_reshards_to_one_process_and_back_bit_exact(name, runs):
    """Adafactor's factored state reshards exactly too: its row statistics are sharded like
    the rows, its column statistics are whole on every rank."""
    r = runs[0][name]
    assert r.error is None, r.error
    assert r.one_process_state_exact and r.back_state_exact and r.back_params_exact


#: The MLP's weight matrices, (rows, columns).
SHAPES = list(zip(D.FSDP_WIDTHS[1:], D.FSDP_WIDTHS[:-1], strict=True))


def _rows_of(rank, n_rows):
    """How many of ``n_rows`` rows FSDP2 gives ``rank``: blocks of ⌈rows/w⌉."""
    per = math.ceil(n_rows / WORLD_SIZE)
    return max(0, min(n_rows, (rank + 1) * per) - rank * per)


def _gathered_bytes(shapes, element_size):
    """Bytes of the whole matrices, padded as FSDP2 pads shards (to a multiple of w rows)."""
    return sum(math.ceil(rows / WORLD_SIZE) * WORLD_SIZE * cols * element_size
               for rows, cols in shapes)


def _matrix_bytes(name):
    """bfloat16 bytes of the matrices Muon orthogonalises, padded as FSDP2 pads shards."""
    shapes = SHAPES[:-1] if name == "MuonWithAdamW" else SHAPES    # the head goes to AdamW
    return _gathered_bytes(shapes, 2)


def test_what_the_step_communicates(runs):
    results = runs[0]
    n_tensors = 2 * (len(D.FSDP_WIDTHS) - 1)
    for name in ("SGD", "Adam", "AdamW", "Lion", "SophiaG", "AdamWScheduleFree"):
        assert results[name].comm == dict(all_gather=0, all_reduce=0, calls=0), name
    for name in ("LAMB", "LARS"):       # two whole-tensor norms per tensor, one float64 each,
        assert results[name].comm == dict(all_gather=0, all_reduce=2 * n_tensors * 8, calls=2)
    for name in ("Muon", "MuonWithAdamW"):   # each matrix gathered once, in bfloat16
        comm = results[name].comm
        assert comm["all_gather"] == _matrix_bytes(name) and comm["all_reduce"] == 0, name
    # Adafactor: column statistics and RMS norms, a few bytes per column: no matrix moves.
    assert 0 < sum(results["Adafactor"].comm[k] for k in ("all_gather", "all_reduce")) < 2000
    # Shampoo: every float64 gradient matrix gathered; Adam grafting's norm of each tensor and
    # the norm of each vector's diagonal step all-reduced, one float64 each.
    n_matrices = len(SHAPES)
    assert results["Shampoo"].comm == dict(all_gather=_gathered_bytes(SHAPES, 8),
                                           all_reduce=(n_tensors + n_matrices) * 8,
                                           calls=n_matrices + n_tensors + n_matrices)
    # SOAP: the gradients of the two matrices with a factor gathered (float64), nothing else.
    assert results["SOAP"].comm == dict(all_gather=_gathered_bytes([SHAPES[0], SHAPES[2]], 8),
                                        all_reduce=0, calls=2)


def test_muon_stacks_sharded_matrices_of_one_shape(runs):
    """Two sharded 31 x 31 matrices, gathered and orthogonalised as one stack: one process's
    numbers, each matrix gathered once (in bfloat16), and a checkpoint that resumes exactly."""
    r = runs[0]["muon stacked"]
    assert r.error is None, r.error
    assert D.max_difference(r.params, D.train_single(r.job, WORLD_SIZE)) < TOLERANCE
    shapes = list(zip(r.job.widths[1:], r.job.widths[:-1], strict=True))
    assert r.comm["all_gather"] == _gathered_bytes(shapes, 2) and r.comm["all_reduce"] == 0
    assert r.resumed_exact


@pytest.mark.parametrize("name", ["Shampoo", "SOAP"])
def test_kronecker_state_per_rank_against_theory(name, runs):
    """Factors (and SOAP's moments of a preconditioned matrix) whole on every rank, the
    elementwise state in rows: float64 values, and a float32 step counter per tensor."""
    def per_rank(rank):
        total = 0
        for rows, cols in SHAPES:
            if name == "Shampoo":   # H, P per side; grafting's v and the momentum in rows
                total += 2 * (rows**2 + cols**2) + 2 * _rows_of(rank, rows) * cols
            elif rows <= 16 or cols <= 16:      # SOAP with a factor: GG, Q; m, v whole
                total += sum(2 * n * n for n in (rows, cols) if n <= 16) + 2 * rows * cols
            else:                                # SOAP without one: m, v in rows
                total += 2 * _rows_of(rank, rows) * cols
            # the bias: Shampoo's h, its root, v and momentum; SOAP's m and v (in rows)
            total += (4 if name == "Shampoo" else 2) * _rows_of(rank, rows)
        return 8 * total + 4 * 2 * len(SHAPES)
    assert runs[0][name].state_bytes == [per_rank(r) for r in range(WORLD_SIZE)]


def test_memory_per_rank_against_theory(runs):
    rows = {r["scheme"]: r for r in runs[1]}
    single = rows["DDP"]["single"]
    assert rows["DDP"]["state_bytes"] == [single] * WORLD_SIZE        # every rank, all of it
    assert sum(rows["ZeRO-1"]["state_bytes"]) == single               # whole tensors, split
    # FSDP2: rank r holds rows [r·⌈R/w⌉, (r+1)·⌈R/w⌉) of every tensor (two float64 moments
    # per value) and every tensor's float32 step counter.
    shapes = [(n_out, n_in) for n_in, n_out in zip(D.FSDP_WIDTHS, D.FSDP_WIDTHS[1:], strict=False)]
    shapes += [(n_out, 1) for n_out, _ in shapes]                      # biases
    theory = [sum(_rows_of(r, n) * cols * 2 * 8 + 4 for n, cols in shapes)
              for r in range(WORLD_SIZE)]
    assert rows["FSDP2"]["state_bytes"] == theory
    assert rows["FSDP2"]["param_bytes"][0] < rows["DDP"]["param_bytes"][0]


def test_adam8bit_quantized_state_on_shards_is_refused_without_row_blocks(runs):
    """Blocks that run on across rows would straddle processes: refused, with the fix named,
    before any parameter changes."""
    r = runs[0]["quantized"]
    assert r.error == ("ValueError: Adam8bit quantizes DTensor (sharded, FSDP2) parameters "
                       "only with row_blocks=True (blocks that never cross a row, so that each "
                       "process holds whole blocks): Adam8bit(..., row_blocks=True)")


def test_adam8bit_row_blocks_on_shards_equal_one_process_with_the_same_blocks(runs):
    """8-bit moments quantized per row block on each process's rows: one process's numbers
    with row_blocks=True (the same blocks), within round-off. Against one process's default
    blocks (runs of 16 values across rows) the difference is the quantization's: measured
    1.2e-3 after 4 steps at lr 1e-2, an eighth of one step; bounded here by half a step."""
    r = runs[0]["row blocks"]
    assert r.error is None, r.error
    assert max_difference(r.params, D.train_single(r.job, WORLD_SIZE)) < TOLERANCE
    flat = D.train_single(D.Job("Adam8bit", {**r.job.hyper, "row_blocks": False}, steps=4,
                                widths=D.FSDP_WIDTHS), WORLD_SIZE)
    assert 0 < max_difference(r.params, flat) < 0.5 * r.job.hyper["lr"]
    assert r.resumed_exact and r.one_process_state_exact and r.back_state_exact
    assert r.back_params_exact


def test_adam8bit_row_blocks_state_is_sharded_and_about_two_bytes(runs):
    r = runs[0]["row blocks"]
    model = D.build_model(0, r.job.widths)
    optimizer = D.make_optimizer(r.job, model)
    D.train(model, optimizer, r.job, range(1), WORLD_SIZE)
    single = optlib.state_bytes(optimizer)
    assert sum(r.state_bytes) - single < 100          # the split adds only step counters
    assert max(r.state_bytes) < 0.6 * single
    matrices = sum(p.numel() for p in model.parameters() if p.ndim == 2)
    codes_and_scales = sum(st["exp_avg_code"].numel() * 2 + st["exp_avg_absmax"].numel() * 8
                           for st in optimizer.state.values() if "exp_avg_code" in st)
    assert codes_and_scales / matrices < 2.6          # 2 bytes + two scales per row block


def _soap_after_two_steps(hyper, perturbation):
    """One process, SOAP on the FSDP runs' MLP: two steps (the first only starts the basis),
    every gradient scaled by 1 + ``perturbation``."""
    job = D.Job("SOAP", dict(lr=1e-2, **hyper), steps=2, widths=D.FSDP_WIDTHS)
    model = D.build_model(0, job.widths)
    optimizer = D.make_optimizer(job, model)
    for step in range(2):
        x, y = D.global_batch(step, WORLD_SIZE, 0, job.widths)
        torch.nn.functional.mse_loss(model(x), y).backward()
        for p in model.parameters():
            p.grad.mul_(1 + perturbation)
        optimizer.step()
        optimizer.zero_grad()
    return [p.detach() for p in model.parameters()]


def test_soap_with_a_singular_factor_is_sensitive_to_round_off_in_one_process():
    """Why the FSDP2 test gives SOAP only nonsingular factors: the 31x31 factor of a 31x16
    gradient has a null space of dimension 15, whose eigenbasis eigh picks from the
    round-off, and Adam's step in that basis depends on the choice. One part in 1e15 of the
    gradient (the size of the difference between two processes' averaged gradient and one
    process's) moves the weights by 2e-2 at lr 1e-2; with nonsingular factors by round-off."""
    def moved(hyper):
        return max_difference(_soap_after_two_steps(hyper, 0.0),
                              _soap_after_two_steps(hyper, 1e-15))
    assert moved({}) > 1e-3
    assert moved(dict(max_precond_dim=16)) < TOLERANCE


# ---- no processes: the helpers on plain tensors, and item 17 of the drop-in issue ---------
def test_a_rule_without_shard_support_refuses_them_clearly(monkeypatch):
    """No optlib optimizer sets ``supports_sharded = False`` now; the refusal stays for
    rules that will: before anything changes, with the way out named."""
    class Whole(optlib.SGD):
        supports_sharded = False

    monkeypatch.setattr("optlib.optimizer.is_sharded", lambda p: True)
    p = torch.nn.Parameter(torch.ones(2, 2))
    p.grad = torch.ones_like(p)
    with pytest.raises(NotImplementedError, match=r"Whole does not support DTensor .*ignored_params"):
        Whole([p], lr=0.1).step()
    assert torch.equal(p, torch.ones(2, 2))


def test_sharded_helpers_are_the_identity_on_plain_tensors():
    ts = [torch.randn(3, 4), torch.randn(5)]
    assert torch.equal(sharded.norms(ts), torch.stack(torch._foreach_norm(ts)))
    for t in ts:
        assert sharded.whole(t) is t and sharded.reduced(t) is t and sharded.local(t) is t
        assert sharded.shard_like(t, t) is t and not sharded.is_sharded(t)


@pytest.mark.parametrize("make", [lambda p: optlib.LAMB(p, weight_decay=0.1),
                                  lambda p: optlib.LARS(p, lr=0.1, weight_decay=0.1)],
                         ids=["LAMB", "LARS"])
def test_trust_ratio_optimizers_run_on_the_meta_device(make):
    """No ``.tolist()`` of the trust ratios: shape-only (meta) tensors step too."""
    params = [torch.empty(4, 3, device="meta", requires_grad=True),
              torch.empty(3, device="meta", requires_grad=True)]
    optimizer = make(params)
    for _ in range(2):
        for p in params:
            p.grad = torch.empty_like(p)
        optimizer.step()
    assert all(p.device.type == "meta" for p in params)


def test_schedule_free_mode_switch_creates_no_state():
    """train()/eval() before any step must not leave empty entries in ``state``: FSDP's
    ``get_state_dict`` then believes the state exists and a checkpoint loads nothing."""
    optimizer = optlib.AdamWScheduleFree([torch.zeros(3, requires_grad=True)])
    optimizer.train()
    optimizer.eval()
    assert len(optimizer.state) == 0


def test_the_chapter_tables(runs):
    results, memory = runs
    table = D.fsdp_table(list(results.values()))
    assert "LAMB" in table and "refused" in table and "✗" not in table
    assert "FSDP2" in D.memory_table(memory)


# ---- Adam8bit's row blocks on plain tensors ----------------------------------------------
def test_row_blocks_equal_the_default_blocks_when_rows_are_whole_blocks():
    """Rows of 64 values in blocks of 16: the row blocks are the default blocks, bit for bit."""
    def run(row_blocks):
        torch.manual_seed(0)
        p = torch.nn.Parameter(torch.randn(6, 64))
        opt = optlib.Adam8bit([p], lr=1e-2, block_size=16, min_8bit_size=0, row_blocks=row_blocks)
        for step in range(5):
            p.grad = torch.randn(6, 64, generator=torch.Generator().manual_seed(step))
            opt.step()
        return p.detach().clone(), opt
    (a, rows), (b, _) = run(True), run(False)
    assert torch.equal(a, b)
    st = rows.state[next(iter(rows.state))]
    assert st["exp_avg_code"].shape == (6, 64) and st["exp_avg_absmax"].shape == (6, 4)


def test_row_blocks_never_cross_a_row():
    """A row of huge values beside a row of tiny ones: each keeps its own scale."""
    from optlib.quantized import SIGNED, dequantize_rows, quantize_rows

    x = torch.cat([1e3 * torch.randn(1, 20), 1e-3 * torch.randn(1, 20)])
    codes, absmax = quantize_rows(x, SIGNED, block_size=16)
    assert codes.shape == x.shape and absmax.shape == (2, 2)
    back = dequantize_rows(codes, absmax, SIGNED, 16, x)
    assert ((back - x).abs() <= 0.02 * x.abs().amax(dim=1, keepdim=True)).all()


def test_row_blocks_resume_from_state_dict_and_bad_value():
    p = torch.nn.Parameter(torch.randn(5, 40))
    opt = optlib.Adam8bit([p], lr=1e-2, block_size=16, min_8bit_size=0, row_blocks=True)
    p.grad = torch.ones_like(p)
    opt.step()
    again = optlib.Adam8bit([p], lr=1e-2, block_size=16, min_8bit_size=0, row_blocks=True)
    again.load_state_dict(opt.state_dict())
    st = again.state[p]
    assert st["exp_avg_code"].dtype == torch.uint8 and st["exp_avg_absmax"].shape == (5, 3)
    with pytest.raises(ValueError, match="row_blocks"):
        optlib.Adam8bit([p], row_blocks=1)
