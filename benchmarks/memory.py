"""How many bytes of state each optlib optimizer keeps per parameter: measured vs theory.

Run: ``python benchmarks/memory.py``. Every optimizer takes one step on the same MLP
(float32; two weight matrices, two biases and a LayerNorm) and ``optlib.state_bytes``
is compared with what the algorithm needs:

* SGD with momentum, Lion, LARS, Muon: one buffer, 4 bytes per float32 parameter;
* Adam, AdamW, RAdam, Adamax, Adadelta, LAMB, SophiaG, schedule-free AdamW: two buffers, 8 bytes;
* Adafactor: ``rows + cols`` values per matrix instead of ``rows * cols``;
* Adam8bit: two 1-byte codes and two float32 scales per block of 256: 2.03 bytes
  (tensors under 4096 values keep 8);
* Shampoo (Adam grafting, no momentum): per m x n matrix the factors L, R and their
  inverse roots, 2 (m² + n²) values, plus Adam's v (mn); a vector its diagonal factor,
  root and v (3 values per element). For the 512 x 256 weights: 4 (1 + 2 (m/n + n/m))
  = 24 bytes per parameter;
* SOAP: per matrix Adam's m and v (2mn) and, per side, the factor and its eigenbasis,
  2 (m² + n²): 28 bytes per parameter for 512 x 256; a vector m and v only (Adam);

plus a step counter (a 4-byte 0-dim tensor) per tensor where the optimizer keeps one.
"""

from __future__ import annotations

import math

import torch

import optlib

COUNTER = 4  # a float32 0-dim step counter


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.LayerNorm(512),
                               torch.nn.ReLU(), torch.nn.Linear(512, 256))


def _adam8bit(p, block=256, small=4096):
    n = p.numel()
    if n < small:
        return 8 * n + COUNTER
    return 2 * n + 2 * 4 * math.ceil(n / block) + COUNTER


def _adafactor(p):
    if p.dim() > 1:   # float32 row and column means of the squared gradient
        return 4 * (math.prod(p.shape[:-1]) + math.prod(p.shape[:-2]) * p.shape[-1]) + COUNTER
    return 4 * p.numel() + COUNTER


def _shampoo(p):
    if p.dim() >= 2:   # factors and roots per dimension, Adam's v for grafting
        return 4 * (2 * sum(n * n for n in p.shape) + p.numel()) + COUNTER
    return 4 * 3 * p.numel() + COUNTER       # diagonal factor, its root, v


def _soap(p, max_precond_dim=10000):
    factors = sum(n * n for n in p.shape if n <= max_precond_dim) if p.dim() >= 2 else 0
    return 4 * (2 * p.numel() + 2 * factors) + COUNTER     # m, v; GG and Q per side


def _muon_with_adamw(p, hidden_ids):
    return 4 * p.numel() if id(p) in hidden_ids else 8 * p.numel() + COUNTER


def _schedule_free(params, **kw):
    opt = optlib.AdamWScheduleFree(params, **kw)
    opt.train()
    return opt


# name: (make optimizer from a model, theory in bytes for one float32 parameter tensor)
OPTIMIZERS = {
    "SGD": (lambda m: optlib.SGD(m.parameters(), lr=0.1), lambda p: 0),
    "SGD-momentum": (lambda m: optlib.SGD(m.parameters(), lr=0.1, momentum=0.9),
                     lambda p: 4 * p.numel()),
    "Adagrad": (lambda m: optlib.Adagrad(m.parameters()), lambda p: 4 * p.numel() + COUNTER),
    "RMSprop": (lambda m: optlib.RMSprop(m.parameters()), lambda p: 4 * p.numel() + COUNTER),
    "Adadelta": (lambda m: optlib.Adadelta(m.parameters()),                 # v and a
                 lambda p: 8 * p.numel() + COUNTER),
    "Adam": (lambda m: optlib.Adam(m.parameters()), lambda p: 8 * p.numel() + COUNTER),
    "AdamW": (lambda m: optlib.AdamW(m.parameters()), lambda p: 8 * p.numel() + COUNTER),
    "NAdam": (lambda m: optlib.NAdam(m.parameters()),
              lambda p: 8 * p.numel() + 2 * COUNTER),               # + the μ product
    "RAdam": (lambda m: optlib.RAdam(m.parameters()), lambda p: 8 * p.numel() + COUNTER),
    "Adamax": (lambda m: optlib.Adamax(m.parameters()), lambda p: 8 * p.numel() + COUNTER),
    "Adafactor": (lambda m: optlib.Adafactor(m.parameters()), _adafactor),
    "Adam8bit": (lambda m: optlib.Adam8bit(m.parameters()), _adam8bit),
    "Lion": (lambda m: optlib.Lion(m.parameters()), lambda p: 4 * p.numel()),
    "SophiaG": (lambda m: optlib.SophiaG(m.parameters()), lambda p: 8 * p.numel() + COUNTER),
    "LAMB": (lambda m: optlib.LAMB(m.parameters()), lambda p: 8 * p.numel() + COUNTER),
    "LARS": (lambda m: optlib.LARS(m.parameters(), lr=0.1), lambda p: 4 * p.numel()),
    "Shampoo": (lambda m: optlib.Shampoo(m.parameters()), _shampoo),
    "SOAP": (lambda m: optlib.SOAP(m.parameters()), _soap),
    "AdamWScheduleFree": (lambda m: _schedule_free(m.parameters()),
                          lambda p: 8 * p.numel()),                # z and v, no counter
    # Muon takes 2-D weights only; MuonWithAdamW gives the rest (and the output layer) to AdamW
    "Muon": (lambda m: optlib.Muon([p for p in m.parameters() if p.ndim == 2]),
             lambda p: 4 * p.numel()),
    "MuonWithAdamW": (lambda m: optlib.MuonWithAdamW(m), None),    # theory needs the split
}


def measure() -> list[dict]:
    """One row per optimizer: state bytes after one step, measured and in theory."""
    rows = []
    for name, (make, theory) in OPTIMIZERS.items():
        m = model()
        opt = make(m)
        m(torch.randn(8, 256, generator=torch.Generator().manual_seed(1))).square().mean().backward()
        opt.step()
        params = [p for group in opt.param_groups for p in group["params"]]
        if name == "MuonWithAdamW":
            hidden = {id(p) for p in optlib.muon_param_groups(m)[0]}
            expected = sum(_muon_with_adamw(p, hidden) for p in params)
        else:
            expected = sum(theory(p) for p in params)
        n = sum(p.numel() for p in params)
        rows.append(dict(name=name, params=n, measured=optlib.state_bytes(opt), theory=expected))
    return rows


def main(rows: list[dict] | None = None) -> None:
    """Print the table (of ``rows`` from :func:`measure`, measured now if not given)."""
    rows = measure() if rows is None else rows
    adam = next(r for r in rows if r["name"] == "Adam")["measured"]
    print("One step on an MLP 256-512-256 with LayerNorm, float32")
    print(f"{'optimizer':<18} {'parameters':>10} {'state bytes':>12} {'bytes/param':>12} "
          f"{'theory':>8} {'vs Adam':>8}")
    for r in rows:
        print(f"{r['name']:<18} {r['params']:>10,} {r['measured']:>12,} "
              f"{r['measured'] / r['params']:>12.3f} {r['theory'] / r['params']:>8.3f} "
              f"{r['measured'] / adam:>8.2f}")
    print("Muon optimizes the two weight matrices only; MuonWithAdamW gives the output layer,")
    print("biases and the LayerNorm to AdamW.")


if __name__ == "__main__":
    main()
