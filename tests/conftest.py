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

# Two threads at most: the CI machine has two cores, and tiny tensors gain nothing from more.
torch.set_num_threads(min(2, torch.get_num_threads()))
