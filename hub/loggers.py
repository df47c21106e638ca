"""W&B that never prompts or hangs: online with credentials and a reachable server, offline otherwise."""
from __future__ import annotations

import logging
import netrc
import os
import socket
from urllib.parse import urlparse

log = logging.getLogger(__name__)


def has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators(_wandb_host()) is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def _wandb_host() -> str:
    return urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"


def _reachable(host: str, timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def wandb_mode() -> str:
    """WANDB_MODE if set; else online when a key exists and the server answers; else offline."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if not has_wandb_credentials():
        log.info("W&B: no API key (WANDB_API_KEY or ~/.netrc), logging offline; `wandb sync` uploads later")
        return "offline"
    if not _reachable(_wandb_host()):
        log.warning("W&B: %s not reachable, logging offline; `wandb sync` uploads later", _wandb_host())
        return "offline"
    return "online"


def wandb_logger(save_dir: str, project: str, group: str | None = None, tags=(), name: str | None = None,
                 id: str | None = None, **kwargs):
    """Lightning's WandbLogger with the mode chosen by `wandb_mode()`; the run folder lands in save_dir/wandb."""
    from lightning.pytorch.loggers import WandbLogger

    mode = wandb_mode()
    os.environ.setdefault("WANDB_SILENT", "true")
    return WandbLogger(save_dir=save_dir, project=project, group=group, tags=list(tags), name=name, id=id,
                       offline=mode == "offline", mode=mode, **kwargs)
