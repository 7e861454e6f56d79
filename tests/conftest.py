import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
# `make test` runs two pytest-xdist workers: they share the cores.
_WORKERS = int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', 1))
torch.set_num_threads(max(1, min(2, torch.get_num_threads()) // _WORKERS))

import ghostsr_mm  # noqa: E402,F401  (compat fixes, registrations)

# mmengine lays out a config's text with yapf whenever a run logs, dumps or
# checkpoints it (0.1-0.4 s a time, tens of times per tool run in the
# tests). The tests read configs back, never their layout: in this process
# the text is kept as mmengine builds it, unformatted (still Python).
import mmengine.config.config as _mmengine_config  # noqa: E402

_mmengine_config.FormatCode = lambda text, **kwargs: (text, False)

requires_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason='needs a CUDA GPU (none visible)')
