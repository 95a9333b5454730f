"""sandbox.checkpoint's edges: files that are no PyTorch checkpoint at all, pickles that would run code, and the
temporary files an interrupted atomic save leaves behind."""

from __future__ import annotations

import os
import pickle
import zipfile

import pytest
import torch

from sandbox.checkpoint import load_checkpoint, remove_orphan_temps, save_atomic, torch_load
from sandbox.errors import SandboxError


class Pickled:  # a class in a pickle: weights_only refuses it, since unpickling it imports and runs code
    pass


def one_line(info: pytest.ExceptionInfo) -> str:
    message = str(info.value)
    assert "\n" not in message, message
    return message


@pytest.mark.parametrize(
    "content",
    [os.urandom(4096), b"hello, this is text\n", b"\x89PNG\r\n\x1a\n" + bytes(64), b""],
    ids=["random", "text", "png", "empty"],
)
def test_a_file_that_is_no_checkpoint_says_so(tmp_path, content):
    path = tmp_path / "weights.pth"
    path.write_bytes(content)
    with pytest.raises(SandboxError) as info:
        torch_load(path)
    message = one_line(info)
    assert "is not a PyTorch checkpoint" in message and "run code" not in message
    with pytest.raises(SandboxError, match="is not a PyTorch checkpoint"):
        load_checkpoint(torch.nn.Linear(2, 2), path)


def test_a_zip_that_torch_did_not_write_is_no_checkpoint(tmp_path):
    path = tmp_path / "weights.pth"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "not torch")
    with pytest.raises(SandboxError, match="is not a PyTorch checkpoint"):
        torch_load(path)


def test_a_pickle_with_code_keeps_the_unsafe_pickle_message(tmp_path):
    for name, write in [
        ("plain.pkl", lambda p: p.write_bytes(pickle.dumps({"cls": Pickled}))),
        ("module.pth", lambda p: torch.save(torch.nn.Linear(2, 2), p)),  # a whole module, torch's zip format
    ]:
        path = tmp_path / name
        write(path)
        with pytest.raises(SandboxError) as info:
            torch_load(path)
        message = one_line(info)
        assert "loading it would run code" in message and "not a PyTorch checkpoint" not in message, name


def test_a_real_checkpoint_still_loads(tmp_path):
    net = torch.nn.Linear(2, 2)
    path = save_atomic({"model": net.state_dict()}, tmp_path / "last.pth")
    other = load_checkpoint(torch.nn.Linear(2, 2), path)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), other.state_dict().values()))


def test_orphan_temps_of_a_target_are_removed_and_nothing_else(tmp_path):
    target = tmp_path / "last.pth"
    save_atomic({"x": torch.zeros(1)}, target)
    orphans = [tmp_path / f".last.pth.abc{i}.tmp" for i in range(4)]  # 4 kills during 4 saves
    keep = [tmp_path / ".best.pth.xyz.tmp", tmp_path / "last.pth.tmp", tmp_path / "notes.txt"]
    for p in orphans + keep:
        p.write_bytes(b"partial")
    assert sorted(remove_orphan_temps(target)) == sorted(orphans)
    assert not any(p.exists() for p in orphans) and all(p.exists() for p in keep) and target.is_file()
    assert remove_orphan_temps(tmp_path / "missing" / "last.pth") == []


def test_evaluate_weights_of_random_bytes_is_one_line(tmp_path):
    """experiments/evaluate.py --weights <random bytes>: exit 2 with the not-a-checkpoint line, not the pickle one."""
    import subprocess
    import sys
    from pathlib import Path

    path = tmp_path / "random.pth"
    path.write_bytes(os.urandom(300))
    script = Path(__file__).resolve().parents[1] / "experiments" / "evaluate.py"
    env = {k: v for k, v in os.environ.items() if k != "SANDBOX_DATA"}
    res = subprocess.run(
        [sys.executable, str(script), "--arch", "ir", "--weights", str(path), "--no-progress"],
        capture_output=True,
        text=True,
        env={**env, "OMP_NUM_THREADS": "1"},
        cwd=tmp_path,
        timeout=300,
    )
    err = res.stderr.strip()
    assert res.returncode == 2 and err.count("\n") == 0, err
    assert "is not a PyTorch checkpoint" in err and "run code" not in err
