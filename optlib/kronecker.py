r"""Kronecker-factored preconditioning: Shampoo and SOAP.

Adam and AdaGrad precondition every coordinate on its own (a diagonal matrix). Shampoo
keeps one matrix per dimension of a weight instead: for a matrix gradient
:math:`G \in \mathbb{R}^{m\times n}`, :math:`L = \sum G G^\top` (:math:`m\times m`, how the
rows co-vary) and :math:`R = \sum G^\top G` (:math:`n\times n`, the columns), whose
Kronecker product :math:`L^{1/2}\otimes R^{1/2}` approximates the full
:math:`mn \times mn` AdaGrad matrix at a cost of :math:`m^2 + n^2` numbers. SOAP runs Adam
in the eigenbasis of those two matrices.

Tensors of order :math:`k` get one factor per dimension. The helpers below work on one
tensor: :func:`unfold` (the matrix whose rows are one dimension), :func:`mode_product`
(a matrix applied along one dimension) and ``inverse_root`` (an inverse matrix root
by eigendecomposition).
"""

from __future__ import annotations

from itertools import chain

import torch
from torch import Tensor

from .optimizer import (
    Optimizer,
    State,
    check_betas,
    check_lr,
    require,
    step_counter,
    zeros_like_state,
)
from .sharded import is_sharded, reduced, shard_like, whole
from .tensorlist import TensorList, per_tensor

GRAFTS = ("adam", "sgd", None)


def decomposition_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype eigendecompositions run in: float64 for float64 tensors, else float32
    (``torch.linalg.eigh`` has no bfloat16 or float16 kernels).

    Args:
        dtype: the parameter's dtype.
    """
    return torch.float64 if dtype == torch.float64 else torch.float32


def unfold(x: Tensor, mode: int) -> Tensor:
    """The mode-``mode`` unfolding of ``x``: a matrix with ``x.shape[mode]`` rows.

    Args:
        x: a tensor.
        mode: the dimension that becomes the rows.
    """
    return x.movedim(mode, 0).reshape(x.shape[mode], -1)


def mode_product(x: Tensor, m: Tensor, mode: int) -> Tensor:
    r""":math:`x \times_{\text{mode}} M`: the matrix ``m`` applied along dimension ``mode``
    of ``x`` (for a matrix ``x``: ``m @ x`` for mode 0, ``x @ m.T`` for mode 1).

    Args:
        x: a tensor.
        m: a square matrix of size x.shape[mode].
        mode: the dimension it acts on.
    """
    return torch.tensordot(m, x, dims=([1], [mode])).movedim(0, mode)


def inverse_root(h: Tensor, root: int, eps: float) -> Tensor:
    r""":math:`H^{-1/\text{root}}` of a symmetric positive definite ``h``, from its
    eigendecomposition :math:`H = Q \operatorname{diag}(\lambda) Q^\top` in
    ``decomposition_dtype``. Eigenvalues below ``eps`` (Shampoo's :math:`H \succeq
    \epsilon I` holds in exact arithmetic; rounding can push the smallest below, even
    under zero, in float32) are raised to ``eps``.

    Args:
        h: a symmetric positive definite matrix.
        root: the root (2k for a k-dimensional tensor).
        eps: the floor of the eigenvalues.
    """
    lam, q = torch.linalg.eigh(h.to(decomposition_dtype(h.dtype)))
    lam = lam.clamp_min(eps).pow_(-1.0 / root)
    return ((q * lam) @ q.T).to(h.dtype)


class Shampoo(Optimizer):
    r"""Shampoo (Gupta, Koren & Singer, *Shampoo: Preconditioned Stochastic Tensor
    Optimization*, ICML 2018), with the step norm grafted from Adam or SGD as practical
    versions do (Agarwal et al. 2020; Anil et al. 2020; Shi et al. 2023).

    For a tensor of order :math:`k \ge 2` (a matrix: :math:`k = 2`) with dimensions
    :math:`n_1, \dots, n_k`, one factor :math:`H_i \in \mathbb{R}^{n_i \times n_i}` per
    dimension, starting at :math:`\epsilon I`:

    .. math::
        G_t &= \nabla \mathcal{L}(\theta_{t-1}) + \lambda\theta_{t-1} \\
        H_{i,t} &= H_{i,t-1} + G_{t,(i)} G_{t,(i)}^\top
            \qquad (G_{(i)}: \text{dimension } i \text{ as rows; a matrix: }
            L_t = L_{t-1} + G_t G_t^\top,\ R_t = R_{t-1} + G_t^\top G_t) \\
        P_{i} &= H_{i,t}^{-1/(2k)} \quad\text{every } f \text{ steps (at } t = 1, 1+f, 1+2f,
            \dots\text{; kept in between)} \\
        S_t &= G_t \times_1 P_1 \times_2 \cdots \times_k P_k
            \qquad(\text{a matrix: } S_t = L^{-1/4} G_t R^{-1/4}) \\
        D_t &= \frac{\|A_t\|}{\|S_t\|}\, S_t, \qquad
            A_t = \begin{cases}
                G_t / (\sqrt{v_t / (1-\beta_2^t)} + \epsilon_A),\
                v_t = \beta_2 v_{t-1} + (1-\beta_2) G_t^2 & \texttt{graft="adam"} \\
                G_t & \texttt{graft="sgd"} \end{cases} \\
        b_t &= \mu b_{t-1} + D_t \ (b_0 = 0), \qquad
        \theta_t = \theta_{t-1} - \eta\, b_t

    with :math:`f` = ``precondition_frequency``, :math:`\mu` = ``momentum`` (no buffer
    when 0: :math:`b_t = D_t`), :math:`\lambda` = ``weight_decay`` (L2: it enters the
    statistics), :math:`\beta_2` = ``graft_beta2`` and :math:`\epsilon_A` = ``graft_eps``
    (Adam's defaults). ``graft=None`` steps along :math:`S_t` itself, the paper's update.

    * **The roots.** :math:`H^{-1/(2k)}` by a symmetric eigendecomposition
      (``inverse_root``) in float64 for float64 parameters, in float32 otherwise,
      every ``precondition_frequency`` steps: the expensive part, :math:`O(n_i^3)` per
      factor, amortized over the steps in between (which reuse the roots but keep adding
      to :math:`H`). The damping :math:`\epsilon` (``eps``) is the factors' starting
      value :math:`\epsilon I`, as in the paper's Algorithm 1, and the floor of their
      eigenvalues. The exponent :math:`-1/(2k)`: for a matrix, :math:`-1/4` per side,
      so that the two sides together act like AdaGrad's :math:`-1/2`. (The paper shows
      :math:`L^{1/2}\otimes R^{1/2} \succeq \tfrac1r \sum_t g_t g_t^\top` for gradients of
      rank at most :math:`r`, :math:`g = \operatorname{vec}(G)`: the Kronecker product of
      the two roots bounds full-matrix AdaGrad's preconditioner.)
    * **Grafting** takes Shampoo's direction and the step *size* of a diagonal method
      (per tensor, the norm of the step Adam without its first moment, or SGD, would
      take), so that Shampoo inherits a tuned learning rate; the momentum then applies
      to the grafted direction (as in Shi et al.'s Distributed Shampoo). ``graft="adam"``
      is the default; grafting costs one buffer (Adam's :math:`v`) per parameter.
    * **Vectors and scalars** (fewer than two dimensions) use the diagonal of the
      paper's single factor: :math:`h_t = h_{t-1} + G_t^2` from :math:`h_0 = \epsilon`,
      :math:`S_t = G_t \odot h^{-1/2}` (:math:`h^{-1/2}` refreshed with the roots), which
      is AdaGrad; grafting and momentum as above. Their state is elementwise, not
      :math:`n \times n`.

    Cost per :math:`m\times n` matrix: :math:`2(m^2 + n^2)` numbers of state (the factors
    and their roots) plus :math:`mn` for Adam grafting and :math:`mn` for momentum; a
    step costs two :math:`m\times m` and :math:`n\times n` matrix products, and every
    :math:`f` steps two eigendecompositions. Meant for the hidden weight matrices:
    a dimension of 50,000 (an embedding) would need a 50,000² factor.

    **Under FSDP2** (``DTensor`` parameters, each process holding a block of rows) the
    factors are functions of whole matrices, so every process all-gathers each matrix's
    :math:`G_t` (:func:`optlib.sharded.whole`, in the parameter's dtype: :math:`mn` values,
    rows padded to a multiple of the number of processes :math:`w`, of which each process
    receives :math:`(w-1)/w`), updates :math:`H_i` and their roots and computes
    :math:`S_t` and :math:`\|S_t\|` on the whole matrix, and keeps its own rows of
    :math:`S_t` (:func:`optlib.sharded.shard_like`). Grafting's :math:`v` and the momentum
    buffer stay sharded (elementwise); :math:`\|A_t\|`, and :math:`\|S_t\|` of a vector
    (whose diagonal state is sharded too), are finished by an all-reduce of one number
    each. Per step: :math:`mn` values gathered per matrix, one number all-reduced per
    tensor (two per vector) with grafting. Per process: :math:`2(m^2 + n^2)` numbers per
    matrix (the factors and roots, the same on every process) and :math:`1/w` of the
    elementwise state. The numbers are one process's to round-off (measured: 4e-14 after 4
    float64 steps, ``tests/test_fsdp.py``), and a distributed checkpoint reshards them
    (2 processes to 1 and back) bit for bit.

    Numbers, with ``graft=None``, ``momentum=0`` and ``precondition_frequency=1``, equal
    pytorch-optimizer's ``Shampoo`` (4.1.0) for tensors of two or more dimensions (float64,
    to rounding: it takes the roots by SVD). Differences from it: it has no grafting; its
    ``momentum`` mixes the raw gradient with the previous *preconditioned* step,
    :math:`(1-\mu) G_t + \mu S_{t-1}`, and feeds that mixture to the statistics and the
    preconditioner; it recomputes the roots at :math:`t = f, 2f, \dots` starting from
    zero roots (so with :math:`f > 1` its first :math:`f-1` steps do not move
    :math:`\theta`); a vector gets a full :math:`n\times n` factor (full-matrix AdaGrad)
    and a scalar no preconditioning (SGD); it modifies ``p.grad`` in place. (heavyball
    3.2.1 has no plain Shampoo, only its KL-Shampoo variant.)

    :func:`optlib.compile` keeps the eager rule (after one warning): the steps that
    refresh the roots are chosen in Python, per tensor.

    Args:
        params: the parameters to optimize: an iterable of tensors, or of dicts that define
            parameter groups (as in torch.optim).
        lr: the learning rate η (a float, or a 1-element tensor as torch allows).
        momentum: μ, momentum on the grafted step (0: none).
        weight_decay: λ, L2 weight decay: λθ is added to the gradient.
        precondition_frequency: f: the roots of the factors are recomputed every f steps.
        eps: ε: each factor starts at εI, and eigenvalues are floored at ε.
        graft: "adam", "sgd" or None: whose per-tensor step size Shampoo's direction takes.
        graft_beta2: β₂ of Adam grafting's second moment.
        graft_eps: ε of Adam grafting's denominator.
    """

    supports_complex = False

    def __init__(self, params, lr=1e-3, momentum=0.0, weight_decay=0.0, precondition_frequency=1,
                 eps=1e-6, graft="adam", *, graft_beta2=0.999, graft_eps=1e-8):
        check_lr(lr)
        require(0.0 <= momentum < 1.0, f"Invalid momentum value: {momentum}")
        require(0.0 <= weight_decay, f"Invalid weight_decay value: {weight_decay}")
        _check_frequency(precondition_frequency)
        require(0.0 < eps, f"Invalid epsilon value: {eps} (Shampoo's factors start at eps * I "
                "and need eps > 0)")
        require(graft in GRAFTS, f"Invalid graft value: {graft!r} (expected 'adam', 'sgd' or None)")
        require(0.0 <= graft_beta2 < 1.0, f"Invalid graft_beta2 value: {graft_beta2}")
        require(0.0 <= graft_eps, f"Invalid graft_eps value: {graft_eps}")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                        precondition_frequency=precondition_frequency, eps=eps, graft=graft,
                        graft_beta2=graft_beta2, graft_eps=graft_eps)
        super().__init__(params, defaults)

    def init_state(self, p, group):
        eps = group["eps"]
        if p.dim() >= 2:        # one factor per dimension, and its root
            factors = [eps * torch.eye(n, dtype=p.dtype, device=p.device) for n in p.shape]
            roots = [torch.zeros(n, n, dtype=p.dtype, device=p.device) for n in p.shape]
        else:                   # the diagonal: h = eps + sum G² (AdaGrad)
            factors, roots = [torch.full_like(p, eps)], [torch.zeros_like(p)]
        state = {"step": step_counter(), "factors": factors, "roots": roots}
        if group["graft"] == "adam":
            state["exp_avg_sq"] = zeros_like_state(p)
        if group["momentum"] != 0:
            state["momentum_buffer"] = zeros_like_state(p)
        return state

    def update(self, group, p: TensorList, g: TensorList, s: State):
        lr, mu, wd, eps = group["lr"], group["momentum"], group["weight_decay"], group["eps"]
        f, graft, beta2 = group["precondition_frequency"], group["graft"], group["graft_beta2"]
        t = per_tensor(s.advance("step"), len(p))
        if wd != 0:
            g = g.add(p, alpha=wd)                                      # G ← ∇L + λθ
        # The factors have each tensor's own shapes: one tensor at a time. A shard's (FSDP2)
        # factors and S are those of the whole matrix: every process gathers G, computes
        # them, and keeps its own piece of S; the rest is elementwise on the pieces.
        for st, x, G, tx in s.each(p, g, t):
            refresh = (tx - 1) % f == 0
            k = x.dim()
            if k >= 2:
                S = Gw = whole(G)
                for i, (H, P) in enumerate(zip(st["factors"], st["roots"], strict=True)):
                    U = unfold(Gw, i)
                    H.addmm_(U, U.T)                                    # H_i ← H_i + G_(i) G_(i)ᵀ
                    if refresh:
                        P.copy_(inverse_root(H, 2 * k, eps))            # P_i = H_i^(−1/2k)
                    S = mode_product(S, P, i)                           # S = G ×₁ P₁ ⋯ ×ₖ Pₖ
                norm_S = torch.linalg.vector_norm(S)                    # of the whole matrix
                S = shard_like(S, x)
            else:
                (h,), (P,) = st["factors"], st["roots"]
                h.addcmul_(G, G)                                        # h ← h + G²
                if refresh:
                    P.copy_(h.rsqrt())
                S = G * P                                               # S = G / √h
                norm_S = reduced(torch.linalg.vector_norm(S))
            if graft is None:
                D = S
            else:
                if graft == "adam":                                     # A = G / (√v̂ + ε_A)
                    v = _buffer(st, "exp_avg_sq", x).mul_(beta2).addcmul_(G, G, value=1 - beta2)
                    A = G / (v.sqrt() / (1 - beta2**tx) ** 0.5 + group["graft_eps"])
                else:                                                   # A = G
                    A = G
                tiny = torch.finfo(S.dtype).tiny
                D = S * (reduced(torch.linalg.vector_norm(A)) / norm_S.clamp_min(tiny))
            if mu != 0:
                D = _buffer(st, "momentum_buffer", x).mul_(mu).add_(D)  # b ← μb + D
            x.add_(D, alpha=-lr)                                        # θ ← θ − η b


class SOAP(Optimizer):
    r"""SOAP (Vyas, Morwani, Zhao, Shapira, Brandfonbrener, Janson & Kakade, *SOAP:
    Improving and Stabilizing Shampoo using Adam*, 2024): Adam run in the eigenbasis of
    Shampoo's preconditioner, which is refreshed every few steps. The authors' signature
    and defaults (without their ``merge_dims``, ``normalize_grads`` and ``data_format``
    options).

    Per tensor of dimensions :math:`n_1, \dots, n_k`, one factor :math:`GG_i` per dimension
    of at most ``max_precond_dim`` (a vector only with ``precondition_1d=True``; other
    dimensions keep the identity, :math:`Q_i = I`), and its eigenbasis :math:`Q_i`
    (eigenvalues descending). With :math:`\tilde X = X \times_1 Q_1^\top \cdots \times_k
    Q_k^\top` (into the basis) and :math:`\bar X = X \times_1 Q_1 \cdots \times_k Q_k`
    (back), for a matrix :math:`\tilde X = Q_L^\top X Q_R`, :math:`\bar X = Q_L X Q_R^\top`:

    .. math::
        \text{first step: } & GG_i \leftarrow (1-\beta_s) G_{(i)} G_{(i)}^\top,\quad
            Q_i = \operatorname{eigenvectors}(GG_i), \quad\text{no update} \\
        m_t &= \beta_1 m_{t-1} + (1-\beta_1) G_t, \qquad
        v_t = \beta_2 v_{t-1} + (1-\beta_2)\, \tilde G_t^{\,2} \\
        \theta &\leftarrow \theta - \eta\,\frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}\,
            \overline{\left(\tilde m_t / (\sqrt{v_t} + \epsilon)\right)}, \qquad
        \theta \leftarrow \theta\,(1 - \eta\lambda) \\
        GG_i &\leftarrow \beta_s GG_i + (1-\beta_s)\, G_{t,(i)} G_{t,(i)}^\top \\
        \text{if } t \bmod f = 0:\ & Q_i \leftarrow \operatorname{QR}(GG_i Q_i)
            \text{ (one power iteration, columns sorted by } \operatorname{diag}(Q_i^\top
            GG_i Q_i) \text{ descending; } v \text{ permuted alike)}

    with :math:`t` the number of updates so far (the first step does not count),
    :math:`\beta_s` = ``shampoo_beta`` (a negative value, the default, means
    :math:`\beta_2`), :math:`f` = ``precondition_frequency`` and :math:`\lambda` =
    ``weight_decay`` (decoupled, applied after the step as the authors do). A tensor with
    no factor (a vector by default, a scalar) takes plain Adam steps. ``correct_bias=False``
    drops the bias corrections. The basis is computed from gradients up to the previous
    step only: the first step just starts it, and each step updates it after moving
    :math:`\theta`.

    The first moment :math:`m` is kept in the parameters' basis and projected every step
    (:math:`\tilde m_t`); :math:`v` lives in the rotated basis (it is only permuted, not
    rotated, when the basis changes, as in the paper). The eigendecomposition runs in
    float64 for float64 parameters, float32 otherwise; the QR refresh in float32, as the
    authors do. State per :math:`m\times n` matrix: :math:`m, v` (:math:`2mn`) and
    :math:`GG_i, Q_i` (:math:`2(m^2+n^2)`).

    Numbers equal pytorch-optimizer's ``SOAP`` (4.1.0) in float64, given every parameter
    a gradient at every step (it counts steps per group, optlib per tensor, like the
    authors). Differences from the authors' code (github.com/nikhilvyas/SOAP): it runs the
    eigendecomposition in float32 for float64 parameters too; it keeps :math:`m` in the
    rotated basis and rotates it when the basis changes (the same numbers in exact
    arithmetic; with a float32 QR the two differ by float32 rounding); it writes the
    weight decay :math:`\theta + (-\eta\lambda)\theta`; ``shampoo_beta=None`` there is
    -1 here. From pytorch-optimizer: a parameter's first step with a gradient at a later
    group step is skipped here (as the authors do) and updated at once there, and its
    bias corrections count the group's steps. From heavyball's ``SOAP`` (3.2.1): other
    defaults (``betas=(0.9, 0.95)``, ``shampoo_beta=0.95``, ``precondition_frequency=2``,
    ``max_precond_dim=2048``, ``merge_dims=True``), a bias-corrected ``shampoo_beta``,
    factors seeded with the first outer product without skipping the first step, the
    first moment rotated with the basis, a QR refresh lifted away from rank deficiency,
    and states stored in float32 (stochastic rounding for lower precisions).

    **Under FSDP2** (``DTensor`` parameters, each process holding a block of rows) a tensor
    with at least one factor keeps all its state whole on every process: :math:`GG_i`,
    :math:`Q_i`, and :math:`m` and :math:`v` too (plain tensors). Every process all-gathers
    :math:`G_t` (:func:`optlib.sharded.whole`, in the parameter's dtype: :math:`mn` values,
    rows padded to a multiple of the number of processes :math:`w`), computes the whole
    step identically and applies its own rows of it (:func:`optlib.sharded.shard_like`).
    Per step: :math:`mn` values gathered per preconditioned matrix, nothing else. Per
    process: the single-process state of those tensors, :math:`2mn + 2(m^2+n^2)` numbers
    per matrix (no saving from sharding). A tensor without a factor (a vector by
    default) keeps sharded Adam moments and communicates nothing. (Sharding :math:`m` and
    :math:`v` too would save :math:`2mn(1 - 1/w)` numbers per matrix for two more
    gathers of :math:`mn` per step, :math:`m` before its projection and
    :math:`\tilde m/(\sqrt v + \epsilon)` before the projection back, and a third at
    each basis refresh; with the factors replicated anyway, the saving is at most a third
    of the state of a square matrix.) Checkpoints reshard (2 processes to 1 and back) bit
    for bit. The numbers are one process's to round-off (measured: 1e-14 after 4 float64
    steps) when every factor is nonsingular. A singular factor (more rows than the
    gradients seen so far have rank, or any vector factor of ``precondition_1d``) has a
    null space whose eigenbasis ``torch.linalg.eigh`` picks from the round-off, and Adam
    is not invariant to that choice: in one process, changing the gradient by one part in
    :math:`10^{15}` moves the weights by about :math:`2\eta` in the next update (measured in
    ``tests/test_fsdp.py``), and the sum of two processes' gradients differs from one
    process's by such round-off.

    :func:`optlib.compile` keeps the eager rule (after one warning): the steps that
    refresh the basis are chosen in Python, per tensor.

    Args:
        params: the parameters to optimize: an iterable of tensors, or of dicts that define
            parameter groups (as in torch.optim).
        lr: the learning rate η (a float, or a 1-element tensor as torch allows).
        betas: (β₁, β₂) of the Adam run in the eigenbasis.
        shampoo_beta: β_s, the decay rate of the factors GG_i (negative: β₂).
        eps: ε, added to the denominator for numerical stability.
        weight_decay: λ, decoupled weight decay: θ ← θ(1 − ηλ) each step. Applied after the
            step, as the authors do.
        precondition_frequency: f: the eigenbasis is refreshed every f updates.
        max_precond_dim: dimensions larger than this keep the identity basis.
        precondition_1d: precondition vectors too (one factor each).
        correct_bias: apply Adam's bias corrections.
    """

    supports_complex = False

    def __init__(self, params, lr=3e-3, betas=(0.95, 0.95), shampoo_beta=-1, eps=1e-8,
                 weight_decay=0.01, precondition_frequency=10, max_precond_dim=10000,
                 precondition_1d=False, correct_bias=True):
        check_lr(lr)
        check_betas(betas)
        require(shampoo_beta < 1.0, f"Invalid shampoo_beta value: {shampoo_beta} (in [0, 1), "
                "or negative for beta2)")
        require(0.0 <= eps, f"Invalid epsilon value: {eps}")
        require(0.0 <= weight_decay, f"Invalid weight_decay value: {weight_decay}")
        _check_frequency(precondition_frequency)
        require(isinstance(max_precond_dim, int) and max_precond_dim >= 1,
                f"Invalid max_precond_dim value: {max_precond_dim}")
        defaults = dict(lr=lr, betas=tuple(betas), shampoo_beta=shampoo_beta, eps=eps,
                        weight_decay=weight_decay, precondition_frequency=precondition_frequency,
                        max_precond_dim=max_precond_dim, precondition_1d=precondition_1d,
                        correct_bias=correct_bias)
        super().__init__(params, defaults)

    @staticmethod
    def factor_sizes(p: Tensor, group: dict) -> list[int | None]:
        """Per dimension of ``p``, the size of its factor, or None where it keeps the
        identity (larger than ``max_precond_dim``; a vector without ``precondition_1d``)."""
        limit = group["max_precond_dim"]
        if p.dim() == 1 and not group["precondition_1d"]:
            return [None]
        return [n if n <= limit else None for n in p.shape]

    def init_state(self, p, group):
        def square(n):
            return None if n is None else torch.zeros(n, n, dtype=p.dtype, device=p.device)

        sizes = self.factor_sizes(p, group)
        if is_sharded(p) and any(n is not None for n in sizes):
            # a shard (FSDP2) of a preconditioned tensor: its moments whole, on every process
            m, v = (torch.zeros(p.shape, dtype=p.dtype, device=p.device) for _ in range(2))
        else:
            m, v = (zeros_like_state(p) for _ in range(2))
        return {"step": step_counter(), "exp_avg": m, "exp_avg_sq": v,
                "GG": [square(n) for n in sizes], "Q": [square(n) for n in sizes]}

    def update(self, group, p: TensorList, g: TensorList, s: State):
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        wd, f = group["weight_decay"], group["precondition_frequency"]
        beta_s = group["shampoo_beta"] if group["shampoo_beta"] >= 0 else beta2
        # A shard (FSDP2) of a tensor with factors: every process gathers G and computes the
        # whole step from whole state (kept on every process), then applies its own piece.
        g = TensorList([G if is_sharded(st["exp_avg"]) else whole(G) for st, G in s.each(g)])
        for st, G, fresh in s.each(g, s.new):
            if fresh:           # the first step starts the statistics and the basis only
                accumulate(st["GG"], G, beta_s)
                for GG, Q in zip(st["GG"], st["Q"], strict=True):
                    if GG is not None:
                        Q.copy_(eigenbasis(GG))
        stepping = [not fresh for fresh in s.new]
        if not any(stepping):
            return
        p, g, s = p.select(stepping), g.select(stepping), s.select(stepping)
        t = torch.stack(s["step"].add_(1)).tolist()                     # updates so far
        for st, x, G, tx in s.each(p, g, t):
            Q = st["Q"]
            step_size = lr
            if group["correct_bias"]:
                step_size *= (1 - beta2**tx) ** 0.5 / (1 - beta1**tx)
            G_rot = project(G, Q)                                       # G̃
            m = st["exp_avg"].lerp_(G, 1 - beta1)                       # m ← β₁m + (1−β₁)G
            v = st["exp_avg_sq"].lerp_(G_rot.square(), 1 - beta2)       # v ← β₂v + (1−β₂)G̃²
            N = project(project(m, Q) / v.sqrt().add_(eps), Q, back=True)   # m̃/(√v+ε), back
            x.add_(shard_like(N, x), alpha=-step_size)                  # θ ← θ − η' N
            if wd != 0:
                x.mul_(1.0 - wd * lr)                                   # θ ← θ(1 − ηλ)
            accumulate(st["GG"], G, beta_s)                             # GG_i ← β_s GG_i + ...
            if tx % f == 0:
                refresh_basis(st)                                       # Q_i ← QR(GG_i Q_i)


def _buffer(state: dict, key: str, p: Tensor) -> Tensor:
    """``state[key]``, created as zeros if missing (a group's ``graft`` or ``momentum``
    changed after its first step)."""
    if key not in state:
        state[key] = zeros_like_state(p)
    return state[key]


def _check_frequency(f) -> None:
    require(isinstance(f, int) and f >= 1, f"Invalid precondition_frequency value: {f}")


def accumulate(factors: list, G: Tensor, beta: float) -> None:
    r""":math:`GG_i \leftarrow \beta\, GG_i + (1-\beta)\, G_{(i)} G_{(i)}^\top` for every
    dimension ``i`` that has a factor (a vector's: the outer product :math:`G G^\top`).

    Args:
        factors: the factors GG_i (None for a dimension without one), updated in place.
        G: the gradient.
        beta: β_s.
    """
    for i, GG in enumerate(factors):
        if GG is not None:
            others = [*chain(range(i), range(i + 1, G.dim()))]
            GG.lerp_(torch.tensordot(G, G, dims=[others, others]), 1 - beta)


def eigenbasis(GG: Tensor) -> Tensor:
    """The eigenvectors of the symmetric ``GG`` as columns, largest eigenvalue first (in
    ``decomposition_dtype``; ``1e-30 I`` added as the authors do, so that an all-zero
    factor still has a basis).

    Args:
        GG: a symmetric matrix.
    """
    dtype = decomposition_dtype(GG.dtype)
    eye = torch.eye(GG.shape[0], dtype=dtype, device=GG.device)
    _, q = torch.linalg.eigh(GG.to(dtype) + 1e-30 * eye)
    return torch.flip(q, dims=[1]).to(GG.dtype)


def project(x: Tensor, Q: list, back: bool = False) -> Tensor:
    r"""``x`` into the basis, :math:`x \times_1 Q_1^\top \cdots \times_k Q_k^\top`, or back
    (``back=True``), :math:`x \times_1 Q_1 \cdots \times_k Q_k`. Each contraction moves
    the dimension it acts on to the end, so after all of them the order is ``x``'s again;
    a dimension without a basis (None) is only moved.

    Args:
        x: a tensor.
        Q: one basis (or None) per dimension of x.
        back: project back into the parameters' basis.
    """
    for q in Q:
        if q is None:
            x = x.permute(*range(1, x.dim()), 0)
        else:
            x = torch.tensordot(x, q, dims=[[0], [1 if back else 0]])
    return x


def refresh_basis(state: dict) -> None:
    r"""One power iteration and a QR decomposition per factor: :math:`Q_i \leftarrow
    \operatorname{QR}(GG_i Q_i)`, its columns first sorted by the eigenvalue estimates
    :math:`\operatorname{diag}(Q_i^\top GG_i Q_i)`, largest first, and ``exp_avg_sq``'s
    dimension ``i`` permuted the same way, so each second moment stays with its
    direction. The QR runs in float32, as the authors' code does.

    Args:
        state: a tensor's SOAP state (GG, Q and exp_avg_sq), updated in place.
    """
    v = state["exp_avg_sq"]
    for i, (GG, Q) in enumerate(zip(state["GG"], state["Q"], strict=True)):
        if GG is None:
            continue
        power = GG @ Q
        estimate = (Q * power).sum(dim=0)
        order = torch.argsort(estimate, descending=True)
        v.copy_(v.index_select(i, order))
        q, _ = torch.linalg.qr(power.index_select(1, order).to(torch.float32))
        Q.copy_(q)
