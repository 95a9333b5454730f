"""experiments/run.py with a SIGKILL at a chosen checkpoint, for the crash tests of tests/test_engine.py.

    python tests/kill_during_run.py after:8 <run.py arguments>    # killed right after last.pth of step 8 is saved
    python tests/kill_during_run.py during:8 <run.py arguments>   # killed in the middle of the next save after it

The kill comes from a :class:`sandbox.engine.TrainCallback` passed to ``train`` (the engine has no test switch of
its own); ``during`` also makes the next ``torch.save`` write a few bytes before the kill, as a crash mid-save does.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import sandbox.engine as engine  # noqa: E402


def kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class KillAt(engine.TrainCallback):
    def __init__(self, when: str, step: int) -> None:
        self.when, self.step = when, step

    def on_checkpoint_saved(self, step: int, path: Path) -> None:
        if step != self.step:
            return
        if self.when == "after":
            kill()
        save = torch.save

        def partial_save(obj, f, *args, **kwargs):  # the next save dies half-way through writing its file
            f.write(b"PK\x03\x04 partial")
            f.flush()
            kill()
            return save(obj, f, *args, **kwargs)

        torch.save = partial_save


def main() -> None:
    when, step = sys.argv[1].split(":")
    train = engine.train
    engine.train = lambda *args, **kwargs: train(*args, callbacks=[KillAt(when, int(step))], **kwargs)
    sys.argv = [str(ROOT / "experiments" / "run.py"), *sys.argv[2:]]
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
