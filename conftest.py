"""Collection settings shared by the tests and the package's doctests."""

import importlib.util
import os

# TensorFlow's C++ start-up chatter would drown the doctests' output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# Importing one would run it (the command line, the rule table printer).
collect_ignore_glob = ["*/__main__.py"]

# The JAX step's module imports jax, an optional extra: without it there is nothing to collect.
if importlib.util.find_spec("jax") is None:
    collect_ignore_glob.append("gradscope/jax_step.py")
