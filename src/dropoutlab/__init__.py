"""dropoutlab: dropout done right (Srivastava et al., "Dropout: A Simple Way to Prevent Neural
Networks from Overfitting", JMLR 15, 2014).

``p`` is the **drop** probability everywhere in this API (as in ``torch.nn.Dropout``); the
paper's p is the *retention* probability, 1 − p.

Example:
    >>> import torch, dropoutlab as dl
    >>> net = torch.nn.Sequential(dl.Dropout(0.2), torch.nn.Linear(784, 10))
    >>> dl.MaxNorm(3.0)(net)  # after each optimizer.step()
"""

from dropoutlab import functional, inference, penalties
from dropoutlab.backend import get_backend, set_backend, use_backend
from dropoutlab.constraints import MaxNorm, max_norm_
from dropoutlab.errors import ConfigError, DataError, DropoutlabError, StoreError
from dropoutlab.insertion import ReLUDropout, insert_dropout
from dropoutlab.layers import Dropout, GaussianDropout

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DataError",
    "Dropout",
    "DropoutlabError",
    "GaussianDropout",
    "MaxNorm",
    "ReLUDropout",
    "StoreError",
    "__version__",
    "functional",
    "get_backend",
    "inference",
    "insert_dropout",
    "max_norm_",
    "penalties",
    "set_backend",
    "use_backend",
]
