"""The errors a user can cause, and how every entry point reports them: one line, exit code 2, no traceback.

Library code raises these (or a subclass) for a user's mistake or a missing file - a bad config value, a data
folder with no usable video, a latent cache made by another VAE, a weight file to download. Bugs stay ordinary
exceptions and keep their tracebacks.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator


class UserError(Exception):
    """Something the user can fix: reported by entry points as `<prog>: error: <message>`, exit code 2."""


class ConfigError(UserError, ValueError):
    """A config file, override or flag that does not fit the config's schema or its rules."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the run needs is not there (data, a trained model, weights to download)."""


class DataError(UserError, ValueError):
    """A data set that cannot be used as asked (no usable video, a malformed list file)."""


@contextmanager
def exit_on_user_error(prog: str) -> Iterator[None]:
    """Inside, a `UserError` prints one line to stderr and exits with code 2.

    On the way out, however it ends, the process leaves its process group: a process that exits with its gloo
    group alive can abort in gloo's threads ("terminate called without an active exception", SIGABRT), which
    the second process of a CPU run did now and then - failing a run that had finished.
    """
    try:
        yield
    except UserError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        _leave_process_group()


def _leave_process_group() -> None:
    import torch.distributed as dist  # here, not at the top: the error types need no torch

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
