"""Test helper (not a test): run ``tools/pretrain.py`` or ``tools/finetune.py`` as a user would,
in this process, under ``torchrun`` or in processes that :func:`spawn` starts, and save *this
rank's* weights before and after training to ``DUMP/rankR.pt``.

Only rank 0 writes run folders, so this is how the DDP tests see what the other ranks hold::

    SSL_FT_DUMP=/tmp/d python -m torch.distributed.run --standalone --nproc_per_node 2 \\
        tests/ddp_worker.py pretrain recipes/quickstart.yaml out=/tmp/r ...

The model is caught where the engine builds it (``build_method`` / ``prepare``); the tool runs
unchanged. ``fixed_bn`` keeps every BatchNorm layer in eval mode (normalising with its running
statistics, which then stay at their initial values): a test-only stand-in for SyncBN, which
PyTorch runs on GPUs only, so that a 2-process run can be compared with a 1-process run without
the per-rank batch statistics that otherwise make them differ.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

__all__ = ["free_port", "run", "spawn"]


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _catch(tool: str, caught: dict) -> None:
    if tool == "pretrain":
        import ssl_ft.pretrain.engine as engine

        build = engine.build_method

        def build_method(*args, **kwargs):
            caught["model"] = build(*args, **kwargs)
            caught["init"] = _state(caught["model"])
            return caught["model"]

        engine.build_method = build_method
        return
    import ssl_ft.finetune.engine as engine

    real_prepare = engine.prepare

    def prepare(cfg, splits=None):
        p = real_prepare(cfg, splits)
        caught["model"], caught["init"] = p.model, _state(p.model)
        return p

    engine.prepare = prepare


def run(tool: str, argv: list[str], dump: str | Path, fixed_bn: bool = False) -> int:
    """Run ``tools/<tool>.py`` with ``argv``; on success save ``{"init", "final"}`` state
    dicts of the model to ``dump/rank<RANK>.pt``. Returns the tool's exit status."""
    from torch.nn.modules.batchnorm import _BatchNorm

    caught: dict = {}
    import ssl_ft.finetune.engine as ft_engine
    import ssl_ft.pretrain.engine as pt_engine

    saved = (pt_engine.build_method, ft_engine.prepare, _BatchNorm.train)
    if fixed_bn:
        _BatchNorm.train = lambda self, mode=True: torch.nn.Module.train(self, False)
    try:
        _catch(tool, caught)
        spec = importlib.util.spec_from_file_location(f"{tool}_tool",
                                                      REPO / "tools" / f"{tool}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        code = mod.run(mod.main, argv)
    finally:
        pt_engine.build_method, ft_engine.prepare, _BatchNorm.train = saved
    if code == 0:
        rank = os.environ.get("RANK", "0")
        torch.save({"init": caught["init"], "final": _state(caught["model"])},
                   Path(dump) / f"rank{rank}.pt")
    return code


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, tool: str, argv: list[str], dump: str,
               fixed_bn: bool) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    code = run(tool, argv, dump, fixed_bn)
    if code:
        raise SystemExit(f"rank {rank}: {tool} exited with {code}")


def spawn(world: int, tool: str, argv: list[str], dump: str | Path, fixed_bn: bool = False) -> None:
    """Run the tool in ``world`` new processes that join one gloo process group through the
    variables torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT)."""
    torch.multiprocessing.spawn(_rank_main, args=(world, free_port(), tool, list(argv), str(dump),
                                                  fixed_bn), nprocs=world, join=True)


if __name__ == "__main__":  # under torchrun: tests/ddp_worker.py TOOL ARGS... (SSL_FT_DUMP set)
    sys.exit(run(sys.argv[1], sys.argv[2:], os.environ["SSL_FT_DUMP"],
                 os.environ.get("SSL_FT_FIXED_BN") == "1"))
