"""Helpers for chapters 2 (SGD) and 3 (momentum): measurements, not optimizers.

The optimizers themselves are written from scratch in the chapters and used from
``optlib``; what lives here is the bookkeeping around them: per-example gradients and
the noise of a minibatch mean, the sharpness of a loss, epoch-based training with a
timer, and the linear algebra of gradient descent with momentum on a quadratic
(Polyak's optimal parameters, the exact convergence rate, and a vectorized runner that
evaluates a whole grid of step sizes and momenta at once for a phase diagram).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "Rule", "compare_updates", "per_example_grads", "minibatch_noise", "predicted_noise", "sharpness",
    "EpochRun", "train_epochs",
    "quadratic_eigenvalues", "polyak_parameters", "heavy_ball_rate", "nesterov_rate", "gd_rate",
    "heavy_ball_grid", "steps_to_tolerance", "run_per_coordinate", "heavy_ball_path",
]


#: A from-scratch update rule: ``rule(params, grads, state)`` changes ``params`` in place;
#: ``state`` is a dict the rule owns (empty on the first call).
Rule = Callable[[list[Tensor], list[Tensor], dict], None]


def compare_updates(make_model: Callable[[], nn.Module], data, contenders: dict, steps: int = 20,
                    batch_size: int = 32, seed: int = 0,
                    lr_at: Callable[[int], float] | None = None) -> dict[str, float]:
    """Train identical float64 copies of a model on the same minibatches, one per contender,
    and return each one's largest parameter difference from the first contender's.

    A contender is either a :data:`Rule` (a from-scratch rule; it is called as
    ``rule(params, grads, state, lr=...)`` when ``lr_at`` is given) or a factory
    ``params -> torch.optim.Optimizer``. ``lr_at(step)`` (step = 0, 1, ...), when given,
    is the learning rate of each step: it is written into the optimizers' groups.
    """
    from .data import batches

    models = {}
    for name in contenders:
        torch.manual_seed(seed)
        models[name] = make_model().double()
    x, y = data.x_train.double(), data.y_train
    stream = batches(x, y, batch_size, seed=seed)
    opts = {n: c(list(models[n].parameters())) if not _is_rule(c) else None
            for n, c in contenders.items()}
    states: dict[str, dict] = {n: {} for n in contenders}
    for t in range(steps):
        xb, yb = next(stream)
        for name, contender in contenders.items():
            model = models[name]
            params = list(model.parameters())
            for p in params:
                p.grad = None
            F.cross_entropy(model(xb), yb).backward()
            if opts[name] is None:
                kwargs = {} if lr_at is None else {"lr": lr_at(t)}
                with torch.no_grad():
                    contender(params, [p.grad for p in params], states[name], **kwargs)
            else:
                if lr_at is not None:
                    for g in opts[name].param_groups:
                        g["lr"] = lr_at(t)
                opts[name].step()
    first = list(models.values())[0]
    return {name: max((a - b).abs().max().item()
                      for a, b in zip(first.parameters(), m.parameters(), strict=True))
            for name, m in models.items()}


def _is_rule(contender) -> bool:
    """A rule takes (params, grads, state); an optimizer factory takes (params)."""
    import inspect

    try:
        return len(inspect.signature(contender).parameters) >= 3
    except (TypeError, ValueError):
        return False


# --------------------------------------------------------------------------- chapter 2
def per_example_grads(model: nn.Module, x: Tensor, y: Tensor,
                      loss_fn: Callable = F.cross_entropy) -> Tensor:
    """Gradient of the loss of each example separately, flattened: a tensor (N, P).

    Row ``i`` is the gradient of ``loss_fn(model(x[i:i+1]), y[i:i+1])`` with respect to
    all of the model's parameters, concatenated in ``model.parameters()`` order. Their
    mean is the full-batch gradient.
    """
    from torch.func import functional_call, grad, vmap

    names = [n for n, _ in model.named_parameters()]
    params = {n: p.detach() for n, p in model.named_parameters()}

    def loss_one(p, xi, yi):
        out = functional_call(model, p, (xi.unsqueeze(0),))
        return loss_fn(out, yi.unsqueeze(0))

    grads = vmap(grad(loss_one), in_dims=(None, 0, 0))(params, x, y)
    return torch.cat([grads[n].reshape(len(x), -1) for n in names], dim=1)


def minibatch_noise(per_example: Tensor, batch_sizes: Sequence[int], samples: int = 100,
                    seed: int = 0) -> dict[int, float]:
    """Measured mean squared error E‖g_B − g‖² of minibatch gradients, per batch size.

    Each minibatch is drawn *without replacement* (as one epoch of shuffled data draws
    it); ``g`` is the mean of all rows of ``per_example``.
    """
    gen = torch.Generator().manual_seed(seed)
    n = per_example.shape[0]
    full = per_example.mean(0)
    out = {}
    for b in batch_sizes:
        if not 1 <= b <= n:
            raise ValueError(f"batch size must be in [1, {n}], got {b}")
        err = 0.0
        for _ in range(samples):
            idx = torch.randperm(n, generator=gen)[:b]
            err += (per_example[idx].mean(0) - full).pow(2).sum().item()
        out[b] = err / samples
    return out


def predicted_noise(per_example: Tensor, batch_size: int, replacement: bool = False) -> float:
    """E‖g_B − g‖² in closed form: σ²/B, times (N − B)/(N − 1) without replacement.

    σ² = mean over examples of ‖g_i − g‖² (the trace of the per-example covariance).
    """
    n = per_example.shape[0]
    sigma2 = (per_example - per_example.mean(0)).pow(2).sum(1).mean().item()
    fpc = 1.0 if replacement else (n - batch_size) / (n - 1)
    return sigma2 / batch_size * fpc


def sharpness(model: nn.Module, x: Tensor, y: Tensor, loss_fn: Callable = F.cross_entropy,
              iters: int = 30, seed: int = 0) -> float:
    """Largest eigenvalue of the Hessian of the full-batch loss, by power iteration.

    Uses Hessian-vector products (double backward), never the Hessian itself. Gradient
    descent on a quadratic with this curvature is stable only for lr < 2 / sharpness.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    loss = loss_fn(model(x), y)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    gen = torch.Generator().manual_seed(seed)
    v = [torch.randn(p.shape, generator=gen, dtype=p.dtype) for p in params]
    lam = 0.0
    for _ in range(iters):
        norm = torch.sqrt(sum((a * a).sum() for a in v))
        v = [a / norm for a in v]
        hv = torch.autograd.grad(grads, params, v, retain_graph=True)
        lam = sum((a * b).sum() for a, b in zip(hv, v, strict=True)).item()
        v = [h.detach() for h in hv]
    return lam


@dataclass
class EpochRun:
    """What :func:`train_epochs` measured: full-batch training loss before training and
    after every epoch, test accuracy at the end, optimizer steps taken and the mean wall time of one epoch."""

    train_loss: list[float] = field(default_factory=list)
    test_accuracy: float = float("nan")
    steps: int = 0
    seconds_per_epoch: float = float("nan")

    @property
    def diverged(self) -> bool:
        return not math.isfinite(self.train_loss[-1]) or self.train_loss[-1] > 1e3


def train_epochs(model: nn.Module, optimizer: torch.optim.Optimizer, data, batch_size: int,
                 epochs: int, seed: int = 0, loss_fn: Callable = F.cross_entropy,
                 schedule: Callable[[int], float] | None = None) -> EpochRun:
    """Train for whole epochs (shuffled, last batch smaller), recording loss per epoch.

    ``data`` has ``x_train, y_train, x_test, y_test`` (``optlib.book.data.digits()``).
    ``schedule(step)`` multiplies each group's initial lr. Stops once the loss is not
    finite or above 1e3 (diverged).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    gen = torch.Generator().manual_seed(seed)
    x, y = data.x_train, data.y_train
    n = len(x)
    base = [g["lr"] for g in optimizer.param_groups]
    run = EpochRun()
    with torch.no_grad():
        run.train_loss.append(loss_fn(model(x), y).item())     # epoch 0: before training
    elapsed = 0.0
    for _ in range(epochs):
        start = time.perf_counter()
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, batch_size):
            if schedule is not None:
                for g, lr in zip(optimizer.param_groups, base, strict=True):
                    g["lr"] = lr * schedule(run.steps)
            idx = perm[i:i + batch_size]
            loss = loss_fn(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            run.steps += 1
        elapsed += time.perf_counter() - start
        with torch.no_grad():
            run.train_loss.append(loss_fn(model(x), y).item())
        if run.diverged:
            break
    run.seconds_per_epoch = elapsed / (len(run.train_loss) - 1)
    with torch.no_grad():
        pred = model(data.x_test).argmax(1)
        run.test_accuracy = (pred == data.y_test).float().mean().item()
    return run


# --------------------------------------------------------------------------- chapter 3
def quadratic_eigenvalues(condition: float, scale: float = 1.0) -> tuple[float, float]:
    """(m, L) = (scale, scale·condition): the curvatures of ``surfaces.quadratic``."""
    if condition < 1:
        raise ValueError(f"condition must be >= 1, got {condition}")
    return scale, scale * condition


def polyak_parameters(m: float, L: float) -> tuple[float, float, float]:
    """Polyak's (1964) optimal heavy ball for curvatures in [m, L]: (lr, beta, rate).

    lr = 4 / (√L + √m)²,  beta = ((√κ − 1)/(√κ + 1))²,  rate = (√κ − 1)/(√κ + 1)
    where κ = L/m and the error shrinks by ``rate`` per step (asymptotically).
    """
    if not 0 < m <= L:
        raise ValueError(f"need 0 < m <= L, got m={m}, L={L}")
    sk = math.sqrt(L / m)
    rate = (sk - 1) / (sk + 1)
    return 4.0 / (math.sqrt(L) + math.sqrt(m)) ** 2, rate ** 2, rate


def gd_rate(lr: float, eigenvalues: Sequence[float]) -> float:
    """Per-step contraction of gradient descent on a quadratic: max |1 − lr·λ|."""
    return max(abs(1 - lr * lam) for lam in eigenvalues)


def heavy_ball_rate(lr, beta, eigenvalues: Sequence[float]) -> Tensor:
    """Exact asymptotic per-step rate of heavy ball on a quadratic (works on grids).

    In an eigendirection with curvature λ the pair (θ_t, θ_{t−1}) evolves by the matrix
    [[1 + β − ηλ, −β], [1, 0]]; the rate is the largest modulus of its eigenvalues,
    the roots of z² − (1 + β − ηλ) z + β = 0, maximized over λ. ``lr`` and ``beta``
    may be tensors of any (broadcastable) shape.
    """
    lr = torch.as_tensor(lr, dtype=torch.float64)
    beta = torch.as_tensor(beta, dtype=torch.float64)
    rate = None
    for lam in eigenvalues:
        b = (1 + beta - lr * lam).to(torch.complex128)
        disc = torch.sqrt(b * b - 4 * beta)
        r = torch.maximum(((b + disc) / 2).abs(), ((b - disc) / 2).abs())
        rate = r if rate is None else torch.maximum(rate, r)
    return rate


def heavy_ball_grid(lr: Tensor, beta: Tensor, eigenvalues: Sequence[float], start: Sequence[float],
                    steps: int) -> Tensor:
    """Loss of heavy ball (PyTorch's form) on f = ½ Σ λ_i x_i², for a grid of (lr, beta).

    ``lr`` and ``beta`` broadcast to a grid shape S; returns losses of shape (steps+1, *S).
    The rule is the one of the chapter: b ← βb + g (b₁ = g₁), x ← x − η b.
    """
    lr = torch.as_tensor(lr, dtype=torch.float64)
    beta = torch.as_tensor(beta, dtype=torch.float64)
    shape = torch.broadcast_shapes(lr.shape, beta.shape)
    lam = torch.tensor(eigenvalues, dtype=torch.float64)
    x = torch.tensor(start, dtype=torch.float64).expand(*shape, len(eigenvalues)).clone()
    b = torch.zeros_like(x)
    lr, beta = lr.expand(shape).unsqueeze(-1), beta.expand(shape).unsqueeze(-1)
    losses = [0.5 * (lam * x * x).sum(-1)]
    for _ in range(steps):
        g = lam * x
        b = beta * b + g          # b₁ = g₁ because b starts at 0
        x = x - lr * b
        losses.append(0.5 * (lam * x * x).sum(-1))
    return torch.stack(losses)


def steps_to_tolerance(losses: Tensor, tol: float) -> Tensor:
    """First step at which the loss falls below ``tol`` and stays there (inf if never).

    ``losses`` has steps along dim 0 (as from :func:`heavy_ball_grid`).
    """
    below = torch.nan_to_num(losses, nan=math.inf) < tol
    # stays below from step t on  <=>  reverse cumulative product of `below` is 1
    stays = below.flip(0).cumprod(0).flip(0).bool()
    any_ = stays.any(0)
    first = stays.float().argmax(0).double()
    return torch.where(any_, first, torch.full_like(first, math.inf))


def run_per_coordinate(surface, lrs: Sequence[float], start: Sequence[float],
                       steps: int) -> Tensor:
    """Gradient descent on a 2-D surface with one learning rate per coordinate,
    θ ← θ − η ⊙ ∇f(θ); returns the trajectory (steps+1, 2) like ``surfaces.run``."""
    eta = torch.tensor(lrs, dtype=torch.float64)
    theta = torch.tensor(start, dtype=torch.float64)
    path = [theta]
    for _ in range(steps):
        theta = theta - eta * surface.gradient(theta)
        path.append(theta)
    return torch.stack(path)


def heavy_ball_path(lr: float, beta: float, curvature: float, start: float, steps: int) -> Tensor:
    """Positions θ_0..θ_steps of heavy ball (b ← βb + λθ, θ ← θ − ηb) on f = ½λθ²."""
    theta, b = float(start), 0.0
    path = [theta]
    for _ in range(steps):
        b = beta * b + curvature * theta
        theta = theta - lr * b
        path.append(theta)
    return torch.tensor(path, dtype=torch.float64)


def nesterov_rate(lr, beta, eigenvalues: Sequence[float]) -> Tensor:
    """Exact asymptotic per-step rate of Nesterov's momentum on a quadratic (works on grids).

    In an eigendirection with curvature λ, with a = ηλ, the iterates follow the roots of
    z² − (1 + β)(1 − a) z + β(1 − a) = 0; the rate is their largest modulus, maximized
    over λ. Stable iff every a lies in (0, 2(1 + β)/(1 + 2β)).
    """
    lr = torch.as_tensor(lr, dtype=torch.float64)
    beta = torch.as_tensor(beta, dtype=torch.float64)
    rate = None
    for lam in eigenvalues:
        q = 1 - lr * lam
        b = ((1 + beta) * q).to(torch.complex128)
        disc = torch.sqrt(b * b - 4 * beta * q)
        r = torch.maximum(((b + disc) / 2).abs(), ((b - disc) / 2).abs())
        rate = r if rate is None else torch.maximum(rate, r)
    return rate
