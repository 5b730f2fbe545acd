"""Collection settings shared by the tests and the package's doctests."""

import os

# TensorFlow's C++ start-up chatter would drown the doctests' output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# Importing it would run the command line.
collect_ignore = ["gradscope/__main__.py"]
