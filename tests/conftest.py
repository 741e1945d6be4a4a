"""Shared test settings.

Hypothesis deadlines are off: the suite runs on small shared CPUs where one example can
stall for a second for reasons that have nothing to do with the code under test. The
number of examples per property is kept moderate so the whole suite stays fast; set
HYPOTHESIS_PROFILE=thorough for a longer hunt.
"""

import os

import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default", deadline=None, max_examples=50, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.register_profile("thorough", deadline=None, max_examples=1000, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# One thread: test tensors are tiny, and on a busy machine OpenMP threads waiting for each
# other can make a 10 ms call take a second.
torch.set_num_threads(1)
