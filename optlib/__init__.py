"""optlib: the optimizers and schedules of the book, as drop-in ``torch.optim`` code.

Every optimizer is a ``torch.optim.Optimizer``: it works with ``torch.optim.lr_scheduler``,
DDP, ``ZeroRedundancyOptimizer`` and FSDP2 (``fully_shard``: see :mod:`optlib.sharded`),
and saves and loads ``state_dict`` in torch's format and ``torch.distributed.checkpoint``.
The book's helpers (data, toy problems, plots, checkers) live in ``optlib.book``; the
core never imports them.
"""

from . import schedules
from .adam import Adam, Adamax, AdamW, NAdam, RAdam
from .adaptive import Adadelta, Adagrad, RMSprop
from .clipping import clip_grad_norm_
from .compiled import compile
from .factored import Adafactor
from .groups import param_groups
from .kronecker import SOAP, Shampoo
from .large_batch import LAMB, LARS
from .lr_range import lr_range_test
from .matrix import Muon, MuonWithAdamW, muon_param_groups
from .memory import state_bytes
from .optimizer import Optimizer
from .quantized import Adam8bit
from .schedule_free import AdamWScheduleFree
from .second_order import SophiaG, gnb_update_hessian
from .sgd import SGD
from .sign import Lion
from .tensorlist import PerTensor, TensorList

__version__ = "0.1.0"

__all__ = [
    "SGD", "Adagrad", "RMSprop", "Adadelta", "Adam", "AdamW", "NAdam", "RAdam", "Adamax",
    "Adafactor", "Muon", "MuonWithAdamW", "muon_param_groups", "Lion", "SophiaG",
    "gnb_update_hessian", "LAMB", "LARS", "AdamWScheduleFree",
    "Adam8bit", "Shampoo", "SOAP",
    "clip_grad_norm_", "param_groups", "state_bytes",
    "schedules", "lr_range_test",
    "Optimizer", "TensorList", "PerTensor", "compile",
]
