"""Checkpoints of a run: `<output_dir>/checkpoints/step_<N>` folders from `accelerator.save_state`, written
atomically (a killed save leaves only a temporary folder, never a half checkpoint), each with the run's record
(`run.json`); the newest `limit` of this run kept, other runs' never touched.

Loading trusts nothing in the folder: accelerate unpickles the registered objects (EMA, counters) with
`weights_only=False`, and DeepSpeed its engine files likewise, so every state file is first loaded here with
`weights_only=True` (tensors, numbers, strings, containers and the numpy arrays of the RNG states) and a file
that needs anything else is refused before accelerate opens it.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from accelerate.utils.other import TORCH_SAFE_GLOBALS

from ..common.errors import UserError
from ..common.files import commit, remove, temporary_path, write_json
from ..common.layout import TrainingRunLayout
from .run_folder import RUN_RECORD, RunRecord, checkpoint_folders

# Files read as data and never unpickled: safetensors, records, and DeepSpeed's tag file ("latest") and its
# conversion scripts (zero_to_fp32.py), which only a user runs.
NOT_PICKLES = (".safetensors", ".json", ".py", ".yaml", ".txt")
NOT_PICKLE_NAMES = ("latest",)


class UnsafeCheckpoint(UserError):
    """A checkpoint file that holds pickled objects other than tensors and plain data."""


class NonFiniteState(RuntimeError):
    """A model or EMA state with NaN or infinite values about to be saved: a bug past the loop's step check."""


def nonfinite_names(named_tensors) -> list[str]:
    """The names of the floating-point tensors that hold a NaN or an infinity."""
    return [name for name, t in named_tensors if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def _safe_globals() -> list:
    """accelerate's list (the numpy arrays of the RNG states) and, where DeepSpeed is installed, the plain data
    types its ZeRO optimizer states hold (an enum, a named tuple, loss scalers: restored as attributes, no code
    of theirs runs)."""
    extra = []
    try:
        from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
        from deepspeed.runtime.zero.config import ZeroStageEnum
        from deepspeed.utils.tensor_fragment import fragment_address

        extra = [ZeroStageEnum, fragment_address, LossScaler, DynamicLossScaler]
    except ImportError:
        pass
    return [*TORCH_SAFE_GLOBALS, *extra]


def check_loadable(folder: Path) -> None:
    """Load every state file under `folder` with `weights_only=True` (memory-mapped: no tensor data is read)."""
    for path in sorted(p for p in folder.rglob("*")
                       if p.is_file() and not p.name.endswith(NOT_PICKLES) and p.name not in NOT_PICKLE_NAMES):
        try:
            with torch.serialization.safe_globals(_safe_globals()):
                try:
                    torch.load(path, map_location="cpu", weights_only=True, mmap=True)
                except RuntimeError as err:
                    if "mmap" not in str(err):
                        raise
                    torch.load(path, map_location="cpu", weights_only=True)  # a legacy (non-zip) file
        except pickle.UnpicklingError:
            try:
                names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
            except Exception:  # noqa: BLE001 - the names only decorate the refusal
                names = []
            raise UnsafeCheckpoint(f"{path} holds pickled objects other than tensors and plain data "
                                   f"({', '.join(names) or 'unknown'}): refusing to load it; resume from another "
                                   f"checkpoint or start over") from None
        except (RuntimeError, EOFError, OSError) as err:
            raise UnsafeCheckpoint(f"{path} cannot be read as a checkpoint file ({str(err).splitlines()[0]})") from None


class Checkpoints:
    def __init__(self, layout: TrainingRunLayout, limit: int, record: RunRecord):
        self.layout, self.limit, self.record = layout, limit, record

    def mine(self) -> list[Path]:
        """This run's checkpoints, oldest first."""
        return [path for _, path in checkpoint_folders(self.layout)
                if (found := RunRecord.read(path)) is not None and found.run_id == self.record.run_id]

    def save(self, accelerator: Accelerator, step: int, state: dict) -> Path:
        """A collective call: every process writes its part of the state into one temporary folder. `state`
        maps names to the tensors that must be finite (the models and the EMA); a non-finite one is a bug."""
        bad = nonfinite_names(state.items())
        if bad:
            raise NonFiniteState(f"step {step}: refusing to checkpoint non-finite values in {', '.join(bad[:5])}")
        final = self.layout.checkpoint(step)
        tmp = temporary_path(final, per_process=False)
        if accelerator.is_main_process and tmp.exists():
            remove(tmp)  # left by a killed save
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            write_json(tmp / RUN_RECORD, self.record.to_json())
            commit(tmp, final)
            for old in self.mine()[: -self.limit]:
                remove(old)
        accelerator.wait_for_everyone()
        return final

    @staticmethod
    def load(accelerator: Accelerator, path: Path) -> int:
        """Load the checkpoint at `path` (checked by every process: nodes may not share a disk) and return its
        step."""
        try:
            check_loadable(path)
            error = None
        except UserError as err:
            error = str(err)
        errors = [e for e in gather_object([error]) if e]
        if errors:
            raise UnsafeCheckpoint(errors[0])
        try:
            accelerator.load_state(str(path))
        except (RuntimeError, ValueError, KeyError) as err:  # torch's mismatch errors: shapes, keys, param groups
            raise UnsafeCheckpoint(f"{path} does not fit this run's models and optimisers ({str(err).splitlines()[0]}); "
                                   "it was written by another version of the code or model: resume it with "
                                   "that version, or start over with overwrite=true") from None
        step = int(path.name.split("_")[-1])
        accelerator.print(f"Resumed from {path} (step {step}).")
        return step
