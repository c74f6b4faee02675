"""Schedule-free AdamW: no learning-rate schedule, an average of the iterates instead."""

from __future__ import annotations

import torch

from .optimizer import Optimizer, State, as_float, check_betas, check_lr, require, zeros_like_state
from .tensorlist import TensorList


class AdamWScheduleFree(Optimizer):
    r"""Schedule-free AdamW (Defazio et al., *The Road Less Scheduled*, NeurIPS 2024);
    numbers equal the authors' ``schedulefree.AdamWScheduleFree``.

    Three sequences: :math:`z` takes the plain (Adam-normalised) gradient steps, :math:`x`
    is a weighted running average of the :math:`z`'s (what you evaluate), and the gradient
    is taken at :math:`y`, an interpolation of the two. With :math:`k` counting steps from
    0, warmup :math:`\eta_k = \eta\min(1, (k+1)/\text{warmup})` and weights
    :math:`w_k = (k+1)^r\,(\max_{j\le k}\eta_j)^{p}`:

    .. math::
        v &\leftarrow \beta_2 v + (1-\beta_2)\, g^2, \qquad
        d = \frac{g}{\sqrt{v/(1-\beta_2^{k+1})} + \epsilon} + \lambda y \\
        z_{k+1} &= z_k - \eta_k\, d, \qquad
        x_{k+1} = (1 - c_{k+1})\, x_k + c_{k+1}\, z_{k+1}, \quad
        c_{k+1} = w_k / \textstyle\sum_{j\le k} w_j \\
        y_{k+1} &= (1-\beta_1)\, z_{k+1} + \beta_1 x_{k+1}

    The parameters hold :math:`y` while training and :math:`x` while evaluating: call
    :meth:`train` before training steps and :meth:`eval` before evaluating or saving
    (:meth:`step` in eval mode raises). Only :math:`z` and :math:`v` are stored (:math:`x`
    is recovered from :math:`y` and :math:`z`): the memory of Adam. Weight decay is
    applied at :math:`y` and goes through :math:`z` like the gradient. The step counter
    :math:`k` belongs to the parameter group, as in the reference. Every group is in the
    same mode: a group added later takes the others' (:meth:`add_param_group`).

    Non-finite gradients: a NaN or infinite gradient makes its coordinate of :math:`y`,
    :math:`z` and :math:`v` NaN (:math:`g/\sqrt{\hat v}` is NaN there), as in the
    reference; other coordinates are not affected.

    Args:
        params: the parameters to optimize: an iterable of tensors, or of dicts that define
            parameter groups (as in torch.optim).
        lr: the learning rate η (a float, or a 1-element tensor as torch allows).
        betas: (β₁, β₂): β₁ interpolates between z and x (0 < β₁ < 1); β₂ is Adam's second-
            moment decay.
        eps: ε, added to the denominator for numerical stability.
        weight_decay: λ: λy is added to the normalised gradient.
        warmup_steps: steps of linear warmup of the lr.
        r: the power of k in the averaging weights w_k.
        weight_lr_power: the power of the largest lr so far in the averaging weights.
    """

    bookkeeping_keys = ("k", "weight_sum", "lr_max", "scheduled_lr")

    def __init__(self, params, lr=0.0025, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 warmup_steps=0, r=0.0, weight_lr_power=2.0):
        check_lr(lr)
        check_betas(betas)
        # β₁ = 0 would make y = z and leave no way back from y to x (eval divides by β₁).
        require(0.0 < betas[0] < 1.0, f"Invalid beta parameter at index 0: {betas[0]} "
                "(schedule-free needs 0 < beta1 < 1)")
        require(0.0 <= betas[1] < 1.0, f"Invalid beta parameter at index 1: {betas[1]}")
        require(0.0 <= eps, f"Invalid epsilon value: {eps}")
        require(0.0 <= weight_decay, f"Invalid weight_decay value: {weight_decay}")
        require(warmup_steps >= 0, f"Invalid warmup_steps value: {warmup_steps}")
        require(r >= 0.0, f"Invalid r value: {r}")
        require(weight_lr_power >= 0.0, f"Invalid weight_lr_power value: {weight_lr_power}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        warmup_steps=warmup_steps, r=r, weight_lr_power=weight_lr_power,
                        k=0, train_mode=False, weight_sum=0.0, lr_max=-1.0, scheduled_lr=0.0)
        super().__init__(params, defaults)

    def init_state(self, p, group):
        return {"z": torch.clone(p, memory_format=torch.preserve_format),
                "exp_avg_sq": zeros_like_state(p)}

    def add_param_group(self, param_group):
        """torch's ``add_param_group``; a group added later starts in the optimizer's current
        mode (that of the other groups), whatever its dict says: every group is always in
        the same mode. (The authors' package starts it in eval mode, so that after
        ``train()`` it trains as it steps but is skipped by the next ``eval()``, and each
        later ``train()`` moves its parameters by (1−β₁)(z−y).)"""
        if self.param_groups:
            param_group = {**param_group, "train_mode": self.param_groups[0]["train_mode"]}
        super().add_param_group(param_group)

    # ---- switching what the parameters hold ----------------------------------------------
    @torch.no_grad()
    def eval(self):
        """Parameters ← x = y + (1 − 1/β₁)(z − y), for evaluation and checkpoints."""
        self._switch(to_train=False)

    @torch.no_grad()
    def train(self):
        """Parameters ← y = x + (1 − β₁)(z − x), for training steps."""
        self._switch(to_train=True)

    def _switch(self, to_train: bool):
        for group in self.param_groups:
            if group["train_mode"] == to_train:
                continue
            beta1 = group["betas"][0]
            params = [p for p in group["params"] if "z" in self.state.get(p, {})]  # no empty entries
            if params:
                z = TensorList(self.state[p]["z"] for p in params)
                TensorList(params).lerp_(z, 1 - beta1 if to_train else 1 - 1 / beta1)
            group["train_mode"] = to_train

    # ---- the step ------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure=None):
        """Perform one optimization step (in train mode only).

        Args:
            closure: re-evaluates the model and returns the loss (optional).
        """
        if not all(group["train_mode"] for group in self.param_groups):
            raise RuntimeError(
                "AdamWScheduleFree.step() was called in eval mode: call optimizer.train() "
                "before training steps and optimizer.eval() before evaluating or saving")
        return super().step(closure)

    def step_values(self, group) -> dict:
        """Advances the group's schedule (also a group without gradients, as in the
        reference): the rule reads the warmup lr η_k as ``lr``, this step's count ``k``
        (from 0) and the averaging weight ``ckp1`` = c_{k+1}. The group keeps the running
        counter ``k`` (then k + 1), ``lr_max``, ``weight_sum`` and ``scheduled_lr``, as the
        reference's groups do.

        Args:
            group: the parameter group.
        """
        lr, ckp1, k = self._advance(group)
        return {"lr": lr, "ckp1": ckp1, "k": k}

    @staticmethod
    def _advance(group) -> tuple[float, float, int]:
        """Warmup lr η_k, averaging weight c_{k+1}; moves the group's counter k to k + 1."""
        k, warmup = group["k"], group["warmup_steps"]
        lr = as_float(group["lr"]) * ((k + 1) / warmup if k < warmup else 1.0)
        group["scheduled_lr"] = lr
        lr_max = group["lr_max"] = max(lr, group["lr_max"])
        weight = (k + 1) ** group["r"] * lr_max ** group["weight_lr_power"]
        weight_sum = group["weight_sum"] = group["weight_sum"] + weight
        ckp1 = weight / weight_sum if weight_sum != 0 else 0.0
        group["k"] = k + 1
        return lr, ckp1, k

    def update(self, group, p: TensorList, g: TensorList, s: State):
        (beta1, beta2), eps, wd = group["betas"], group["eps"], group["weight_decay"]
        lr, ckp1, k = group["lr"], group["ckp1"], group["k"]          # η_k, c_{k+1}, k
        y, z = p, s.z
        v = s.exp_avg_sq.mul_(beta2).addcmul_(g, g, value=1 - beta2)  # v ← β₂v + (1−β₂)g²
        d = g.div(v.div(1 - beta2 ** (k + 1)).sqrt_().add_(eps))    # g / (√v̂ + ε)
        if wd != 0:
            d.add_(y, alpha=wd)                                        # + λy
        # y_{k+1} = (1−β₁) z_{k+1} + β₁ x_{k+1}, written as two in-place updates of y
        y.lerp_(z, ckp1)
        y.add_(d, alpha=lr * (beta1 * (1 - ckp1) - 1))
        z.sub_(d, alpha=lr)                                            # z ← z − η_k d
