"""A short chaotic training run whose last bits show which kernels ran (tests/test_numerics.py).

    python tests/numerics_probe.py [--mlp-only]

Prints one JSON line: a digest of the weights of a digits MLP after 300 AdamW steps at a
learning rate large enough that round-off differences grow into different weights (its
matrix products run in MKL), and, unless ``--mlp-only``, of a two-block transformer after
60 AdamW steps with clipping (LayerNorm, GELU and attention: the kernels oneDNN takes
over). Under the book's numerical environment (``optlib.book.numerics``) the digests
must not depend on the instruction sets that MKL and oneDNN are allowed to use.
"""

from __future__ import annotations

import hashlib
import json
import sys

import torch
import torch.nn.functional as F

from optlib.book import data, models, numerics


def digest(params) -> str:
    h = hashlib.sha256()
    for p in params:
        h.update(p.detach().double().numpy().tobytes())
    return h.hexdigest()[:16]


def main(mlp_only: bool) -> dict[str, str]:
    numerics.apply()
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    split = data.digits()
    net = models.mlp((64, 128, 10), seed=0)
    opt = torch.optim.AdamW(net.parameters(), lr=3e-2)
    for _ in range(300):
        idx = torch.randint(0, len(split.x_train), (64,), generator=gen)
        opt.zero_grad()
        F.cross_entropy(net(split.x_train[idx]), split.y_train[idx]).backward()
        opt.step()
    result = {"capability": torch.backends.cpu.get_cpu_capability(), "mlp": digest(net.parameters())}
    if not mlp_only:
        lm = models.TinyTransformer(vocab_size=65, block_size=32, d_model=32, n_layers=2, seed=0)
        opt = torch.optim.AdamW(lm.parameters(), lr=1e-2)
        for _ in range(60):
            idx = torch.randint(0, 65, (8, 33), generator=gen)
            opt.zero_grad()
            lm.loss(idx[:, :-1], idx[:, 1:]).backward()
            torch.nn.utils.clip_grad_norm_(lm.parameters(), 1.0)
            opt.step()
        result["transformer"] = digest(lm.parameters())
    return result


if __name__ == "__main__":
    print(json.dumps(main(mlp_only="--mlp-only" in sys.argv[1:])))
