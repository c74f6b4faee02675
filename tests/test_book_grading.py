"""optlib.book.grading: the submission runs in a separate process that never holds the
reference; right answers score, wrong ones do not, copies are flagged and score 0.

Submissions are compiled from source as a student's notebook or file defines them (in a
module named ``__main__``), so that they travel to the child process by value."""

import textwrap

import torch

import optlib
import optlib.book.checking
from optlib.book import grading as G

SUBMISSION = textwrap.dedent('''
    import inspect
    import math

    import torch
    import optlib
    from optlib import Adam as LibraryAdam


    def adam(params, grads, state, lr, betas, eps):
        b1, b2 = betas
        state["t"] = t = state.get("t", 0) + 1
        for i, (p, g) in enumerate(zip(params, grads)):
            m = state.setdefault(("m", i), torch.zeros_like(p))
            v = state.setdefault(("v", i), torch.zeros_like(p))
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            p -= lr * (m / (1 - b1**t)) / _denominator(v / (1 - b2**t), eps)


    def _denominator(v_hat, eps):
        return v_hat.sqrt() + eps


    def adam_no_eps(params, grads, state, lr, betas, eps):
        return adam(params, grads, state, lr, betas, 0.0)


    def calls_optlib(params, grads, state, lr, betas, eps):
        if "opt" not in state:
            state["ps"] = [torch.nn.Parameter(p.clone()) for p in params]
            state["opt"] = _make(state["ps"], lr, betas, eps)
        for q, g in zip(state["ps"], grads):
            q.grad = g
        state["opt"].step()
        return [q.detach().clone() for q in state["ps"]]


    def _make(ps, lr, betas, eps):
        return LibraryAdam(ps, lr=lr, betas=betas, eps=eps)


    def hides_the_import(params, grads, state, lr, betas, eps):
        lib = getattr(torch, "op" + "tim")
        if "opt" not in state:
            state["ps"] = [torch.nn.Parameter(p.clone()) for p in params]
            state["opt"] = getattr(lib, "Ad" + "am")(state["ps"], lr=lr, betas=betas, eps=eps)
        for q, g in zip(state["ps"], grads):
            q.grad = g
        getattr(state["opt"], "step")()
        return [q.detach().clone() for q in state["ps"]]


    def calls_torch_sgd(params, grads, state, lr, momentum):
        opt = torch.optim.SGD(params, lr=lr, momentum=momentum)
        return params


    def reads_the_grader(params, grads, state, lr, betas, eps):
        ref = inspect.currentframe().f_back.f_locals["ref"]
        return [p.detach().clone() for p in ref]


    class BareAdam(optlib.Adam):
        pass


    class MySGD(torch.optim.Optimizer):
        def __init__(self, params, lr, momentum):
            super().__init__(params, {"lr": lr, "momentum": momentum})

        @torch.no_grad()
        def step(self):
            for group in self.param_groups:
                for p in group["params"]:
                    buf = self.state[p].get("buf")
                    if buf is None:
                        buf = self.state[p]["buf"] = p.grad.clone()
                    else:
                        buf.mul_(group["momentum"]).add_(p.grad)
                    p.sub_(group["lr"] * buf)


    def warmup(t):
        return min(1.0, t / 10)
''')


def submission() -> dict:
    ns = {"__name__": "__main__"}
    exec(compile(SUBMISSION, "submission.py", "exec"), ns)   # noqa: S102
    return ns


def test_static_flags_name_the_copy():
    sub = submission()
    assert G.static_flags(sub["adam"]) == []
    assert G.static_flags(sub["MySGD"]) == []
    assert any("optlib.adam.Adam" in f for f in G.static_flags(sub["calls_optlib"]))
    assert any("torch.optim" in f for f in G.static_flags(sub["calls_torch_sgd"]))
    assert any("frames" in f for f in G.static_flags(sub["reads_the_grader"]))
    assert G.static_flags(sub["BareAdam"]) == [
        "BareAdam subclasses the library optimizer optlib.adam.Adam"]
    assert G.static_flags(torch.optim.Adam)


def test_grading_in_a_separate_process(capsys):
    sub = submission()
    right = G.grade_update(sub["adam"], "Adam", points=4)
    assert right and right.score == 4 and right.flags == []
    assert right.report.startswith("✓ adam matches optlib.Adam over 3 × 20 steps")

    wrong = G.grade_update(sub["adam_no_eps"], "Adam", points=4, quiet=True)
    assert not wrong and wrong.score == 0
    assert "eps is missing from the denominator" in " ".join(wrong.report.split())

    # Copies the reference from inside: flagged from its code, not run.
    copy = G.grade_update(sub["calls_optlib"], "Adam", quiet=True)
    assert copy.score == 0 and copy.report.startswith("✗ flagged: calls_optlib does not ")
    thief = G.grade_update(sub["reads_the_grader"], "Adam", quiet=True)
    assert thief.score == 0 and "inspects the caller's frames" in " ".join(thief.flags)
    # Hides the copy from the code scan: the child sees optlib.Adam's step being called.
    hidden = G.grade_update(sub["hides_the_import"], "Adam", quiet=True)
    assert hidden.score == 0 and hidden.flags == [
        "called the step of a library optimizer while it ran (torch.optim.adam.Adam)"]
    # Run beside the reference (as the self-check runs it), the same trick is a KeyError.
    ns = submission()
    assert not optlib.book.checking.check_update(ns["reads_the_grader"], "Adam")

    assert G.grade_optimizer(sub["MySGD"], "SGD", quiet=True).score == 1
    bare = G.grade_optimizer(sub["BareAdam"], "Adam", quiet=True)
    assert bare.score == 0 and "subclasses the library optimizer" in " ".join(bare.flags)

    ok = G.grade_schedule(sub["warmup"], optlib.schedules.warmup_cosine(10, 100),
                          quiet=True)
    assert not ok and "mismatch at step 11" in ok.report
    assert G.total([right, wrong, ok]) == (4.0, 9.0)
    assert capsys.readouterr().out.startswith(right.report)
