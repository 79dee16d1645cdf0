"""`Balancer`: a balancing method in your own training loop (see balancer.py), the encoder gates
that run each encoder on the rows carrying its modality (gates.py), and what setup reads off
your model and dataset (fields.py).
"""

from .balancer import Balancer
from .gates import EncoderGates, eval_mode

__all__ = ["Balancer", "EncoderGates", "eval_mode"]
