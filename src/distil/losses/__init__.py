"""Pure loss functions for distillation, registered by name.

``distil.losses.get("jsd")`` returns the function; ``LOSSES.names()`` lists them all;
``kind_of(name)`` says whether a loss is a ``divergence`` (≥ 0, zero at agreement) or an
``objective``. The teacher may be dense logits or a sparse :class:`TopK`. Nothing in this
package holds state, builds modules or does I/O.
"""

from distil.losses import (  # noqa: F401
    adaptive,
    divergences,
    interpolated,
    logit_kd,
    ofa,
    ranking,
    transport,
)  # fmt: skip
from distil.losses.adaptive import akl, bdkd
from distil.losses.divergences import (
    ab_div,
    forward_kl,
    jsd,
    reverse_kl,
    skew_forward_kl,
    skew_reverse_kl,
    tvd,
)
from distil.losses.interpolated import taid_kl
from distil.losses.logit_kd import dist, dkd, logit_std_kd
from distil.losses.ranking import pld
from distil.losses.registry import LOSSES, get, kind_of, options_of, register_loss
from distil.losses.sparse import TopK
from distil.losses.transport import sinkhorn

__all__ = [
    "LOSSES", "TopK", "get", "kind_of", "options_of", "register_loss",
    "ab_div", "akl", "bdkd", "dist", "dkd", "forward_kl", "jsd", "logit_std_kd", "pld",
    "reverse_kl", "sinkhorn", "skew_forward_kl", "skew_reverse_kl", "taid_kl", "tvd",
]  # fmt: skip
