"""Collection settings shared by the tests and the package's doctests."""

import os

# TensorFlow's C++ start-up chatter would drown the doctests' output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# Importing one would run it (the command line, the rule table printer).
collect_ignore_glob = ["*/__main__.py"]
