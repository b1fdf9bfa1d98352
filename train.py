"""Train a spiking network: ``python train.py experiment=mnist16`` (configs in ``conf/``); data-parallel on N
processes: ``torchrun --nproc_per_node=N train.py experiment=mnist16`` (see spikegrad.training.distributed)."""

import os

# before torch allocates (importing spikegrad imports it): PyTorch's CPU allocator puts blocks of
# 2 MiB and more on transparent huge pages, so the [T, B, N] sequences too large for the heap fault
# in 2 MiB at a time instead of 4 KiB (where the kernel's THP mode is madvise or always)
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

from spikegrad.malloc import retain_freed_memory  # noqa: E402

retain_freed_memory()  # before torch allocates: reuse freed tensor memory instead of faulting it in again

import json
import logging
import sys
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard import SummaryWriter

from spikegrad.interop import check_nir_export, save_nir
from spikegrad.sweep import check_objective
from spikegrad.training import distributed, fit, load_checkpoint, resolve_device

log = logging.getLogger("train")


def hparams(cfg: DictConfig) -> dict:
    flat = {}
    for group in ("data", "encoding", "surrogate", "neuron", "model", "loss", "optim", "trainer"):
        node = OmegaConf.to_container(cfg[group], resolve=True) if cfg.get(group) else {}
        for key, value in node.items():
            if isinstance(value, (int, float, str, bool)) and key != "_partial_":
                flat[f"{group}.{key}"] = value
    return {**flat, "T": cfg.T, "seed": cfg.seed}


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    out = Path(HydraConfig.get().runtime.output_dir)
    logging.captureWarnings(True)  # warnings go to train.log too
    log.info(f"overrides: {' '.join(HydraConfig.get().overrides.task) or '(none)'}\n{OmegaConf.to_yaml(cfg)}")
    check_objective(cfg.objective, has_validation=bool(cfg.data.get("val_size", cfg.data.get("val_fraction", 1))),
                    sweep=HydraConfig.get().mode == RunMode.MULTIRUN)
    torch.manual_seed(cfg.seed)
    device = distributed.local_device(resolve_device(cfg.device))
    rank, world = distributed.rank(), distributed.world_size()
    data = instantiate(cfg.data)
    train_loader, val_loader, test_loader = data.loaders(cfg.seed)
    if rank == 0 and hasattr(data, "save"):
        data.save(out)  # what the run folder must record about the data (e.g. the PS-MNIST pixel order)
    shards = distributed.shard_loaders(train_loader, val_loader, test_loader, cfg.seed)  # unchanged in one process
    model = instantiate(cfg.model)
    if world > 1:
        torch.manual_seed(cfg.seed + rank)  # other dropout noise on each process (DDP copies rank 0's weights)
    if cfg.get("ann_checkpoint"):
        load_checkpoint(cfg.ann_checkpoint, model)
    nir_kw = {k: v for k, v in cfg.nir.items() if k != "export"} if (cfg.get("nir") or {}).get("export") else None
    if nir_kw:
        check_nir_export(model, **nir_kw)  # refuse what NIR cannot represent before training, not after
    optimizer = instantiate(cfg.optim)(model.parameters())
    scheduler = instantiate(cfg.scheduler)(optimizer) if cfg.scheduler else None
    sharpener = instantiate(cfg.sharpen)(model) if cfg.sharpen else None
    regularizers = [instantiate(r) for r in (cfg.regularizer or {}).values()]
    generator = torch.Generator(device=device).manual_seed(cfg.seed + rank)
    writer = SummaryWriter(str(out / "tb")) if rank == 0 else None
    metrics = fit(model, *shards, optimizer, instantiate(cfg.loss),
                  encoder=instantiate(cfg.encoding) if cfg.encoding else None, scheduler=scheduler, regularizers=regularizers,
                  sharpener=sharpener, device=device, out_dir=out, resume=cfg.resume, writer=writer,
                  generator=generator, config=OmegaConf.to_container(cfg, resolve=True), **cfg.trainer)
    if rank > 0:
        return metrics.get(cfg.objective)
    if cfg.analysis:
        metrics.update(instantiate(cfg.analysis)(model=model, train_loader=train_loader, val_loader=val_loader,
                                                 test_loader=test_loader, device=device, writer=writer, out_dir=out))
    metrics["overrides"] = list(HydraConfig.get().overrides.task)
    metrics["world_size"] = world
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    if nir_kw:
        save_nir(model, out / "model.nir", **nir_kw)
    scalars = {f"hparam/{k}": v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    writer.add_hparams(hparams(cfg), scalars, run_name=".")
    writer.close()
    spikes = metrics.get("spikes_per_input")
    log.info(f"test accuracy {metrics.get('test_accuracy', float('nan')):.4f}"
             + (f", spikes/input {spikes:.1f}" if spikes is not None else "") + f"; results in {out}")
    return metrics.get(cfg.objective)


if __name__ == "__main__":
    sys.argv += distributed.launch_overrides(sys.argv[1:])  # torchrun: one process group, one run folder
    try:
        main()
    finally:
        distributed.shutdown()
