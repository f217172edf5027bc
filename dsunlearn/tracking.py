"""Per-step event log (`events.jsonl`, rank 0) and optional Weights & Biases tracking.

One JSON object per line, flushed at once, so a killed run keeps every step it finished and a reader can
follow the file while the run goes on. With `tracking.wandb: true` every event also goes to W&B (rank 0
only): offline by default when no API key is configured (never a login prompt, no network needed; `wandb
sync <run>/wandb/offline-run-*` uploads later), online when one is AND the server answers a bounded probe
(PROBE_SECONDS, a TCP connect: never wandb's own ~99 s of retries; see `wandb_mode`). Keys are read by wandb
itself from the environment or ~/.netrc and never pass through dsunlearn's config or logs.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
import threading
import time
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

from dsunlearn import dist
from dsunlearn.errors import ConfigError


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN/inf; keep them visible as strings
    if hasattr(v, "item"):
        return _clean(v.item())
    return v


PROBE_SECONDS = 3.0  # the longest `auto` / `online` waits to learn whether the W&B server answers


def _has_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except (OSError, UnicodeDecodeError):
        return False


def wandb_server() -> tuple[str, int]:
    """(host, port) of the W&B server: WANDB_BASE_URL (as wandb reads it) or api.wandb.ai:443."""
    url = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai")
    return url.hostname or "api.wandb.ai", url.port or (80 if url.scheme == "http" else 443)


def server_reachable(timeout: float = PROBE_SECONDS) -> bool:
    """Whether a TCP connection to the W&B server opens within `timeout` seconds, name lookup included.

    The lookup (getaddrinfo) has no timeout of its own, so the probe runs in a daemon thread that is waited
    for at most `timeout`: without a network this returns False after `timeout`, never wandb's ~99 s retries.
    """
    host, port = wandb_server()
    ok: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                ok.append(True)
        except OSError:
            pass

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout)
    return bool(ok)


@lru_cache(maxsize=4)
def wandb_mode(requested: str) -> str:
    """The W&B mode, decided without blocking for more than PROBE_SECONDS (once per process).

    'offline' as asked; 'auto': 'online' when an API key is configured AND the server answers the bounded
    probe, else 'offline' (a warning says why; `wandb sync` uploads later); 'online': the server must answer,
    else ConfigError (explicitly online with no network would otherwise wait ~99 s and end in a traceback).
    """
    if requested == "offline" or (requested == "auto" and not _has_key()):
        return "offline"
    if server_reachable():
        return "online"
    host, port = wandb_server()
    if requested == "online":
        raise ConfigError(
            f"tracking.mode=online but the W&B server {host}:{port} is unreachable (a {PROBE_SECONDS:g} s connection "
            "probe); set tracking.mode=offline (upload later with `wandb sync`) or tracking.mode=auto, or check the "
            "network"
        )
    print(f"dsunlearn: W&B server {host}:{port} is unreachable (a {PROBE_SECONDS:g} s probe): logging offline "
          "(tracking.mode=auto); upload later with `wandb sync`", file=sys.stderr)  # fmt: skip
    return "offline"


def check_tracking(cfg) -> str | None:
    """Before any run directory exists: wandb importable and the mode decided (rank 0 probes, every rank gets
    the outcome, so a refusal stops all ranks). The W&B mode, or None with tracking.wandb off."""
    if not cfg.tracking.wandb:
        return None
    outcome: tuple[str, str] = ("ok", "")
    if dist.is_main():
        try:
            _import_wandb()
            outcome = ("ok", wandb_mode(cfg.tracking.mode))
        except ConfigError as e:
            outcome = ("error", str(e))
    outcome = dist.broadcast_object(outcome)
    if outcome[0] == "error":
        raise ConfigError(outcome[1])
    return outcome[1] or None


def _import_wandb():
    try:
        import wandb
    except ImportError:
        raise ConfigError("tracking.wandb=true needs the wandb package: pip install 'dsunlearn[wandb]'") from None
    return wandb


def _wandb_flat(fields: dict, prefix: str = "") -> dict:
    """Per-group lists (G-effect) become one scalar per group: `geffect_u/layers.0`."""
    out = {}
    groups = fields.get("geffect_groups")
    for k, v in fields.items():
        if k == "geffect_groups":
            continue
        if isinstance(v, list) and groups and len(v) == len(groups) and k.endswith("_groups"):
            for g, x in zip(groups, v, strict=True):
                out[f"{prefix}{k.removesuffix('_groups')}/{g}"] = x
        elif isinstance(v, (int, float, bool)):
            out[f"{prefix}{k}"] = v
    return out


class EventLog:
    """Append-only JSON-lines log written by rank 0 (other ranks' calls are no-ops), mirrored to W&B if on."""

    def __init__(self, path: str | Path, cfg=None, job: str = "run"):
        self.path = Path(path)
        self._f = open(self.path, "a", encoding="utf-8") if dist.is_main() else None
        self.wandb = None
        if self._f is not None and cfg is not None and cfg.tracking.wandb:
            self.wandb = _start_wandb(cfg, self.path.parent, job)

    def log(self, event: str, **fields) -> None:
        if self._f is None:
            return
        rec = {"event": event, "time": round(time.time(), 3), **{k: _clean(v) for k, v in fields.items()}}
        self._f.write(json.dumps(rec) + "\n")
        self._f.flush()
        if self.wandb is not None:
            flat = _wandb_flat(rec, prefix="" if event.endswith("_step") else f"{event}/")
            flat.pop("time", None)
            step = fields.get("step")
            self.wandb.log(flat, step=step if isinstance(step, int) and event.endswith("_step") else None)

    def log_image(self, name: str, path: str | Path) -> None:
        if self.wandb is not None:
            import wandb

            self.wandb.log({name: wandb.Image(str(path))})

    def log_summary(self, summary: dict) -> None:
        if self.wandb is not None:
            self.wandb.summary.update({k: v for k, v in summary.items() if isinstance(v, (int, float))})

    def log_model(self, model_dir: str | Path, name: str) -> None:
        """The saved model as a W&B artifact (only with tracking.log_model: it can be large)."""
        if self.wandb is not None:
            import wandb

            art = wandb.Artifact(name, type="model")
            art.add_dir(str(model_dir))
            self.wandb.log_artifact(art)

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        if self.wandb is not None:
            self.wandb.finish()
            self.wandb = None


def _start_wandb(cfg, out_dir: Path, job: str):
    wandb = _import_wandb()
    from dsunlearn.config_io import config_to_dict

    os.environ.setdefault("WANDB_SILENT", "true")
    mode = wandb_mode(cfg.tracking.mode)
    try:
        return wandb.init(
            project=cfg.tracking.project,
            entity=cfg.tracking.entity,
            name=f"{job}-{out_dir.name}",
            job_type=job,
            dir=str(out_dir),
            config=config_to_dict(cfg),
            mode=mode,
            settings=wandb.Settings(console="off", silent=True),
        )
    except Exception as e:  # wandb's own errors (bad key, unknown entity, server refused): the user's to fix
        msg = " ".join(str(e).split())[:200]
        raise ConfigError(
            f"W&B did not start in {mode} mode ({type(e).__name__}: {msg}); check WANDB_API_KEY, tracking.entity "
            "and tracking.project, or set tracking.mode=offline"
        ) from None


def read_events(path: str | Path, event: str | None = None, max_bytes: int = 1 << 28) -> list[dict]:
    """The records of an events.jsonl in order (only those of kind `event` if given).

    The file is read as untrusted text: at most `max_bytes`, undecodable bytes replaced, and a line that is not
    a JSON object (cut by a crash, or garbage) skipped: a killed run's log reads up to its last whole line."""
    with open(path, "rb") as fh:
        text = fh.read(max_bytes).decode("utf-8", "replace")
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(rec, dict) and (event is None or rec.get("event") == event):
            out.append(rec)
    return out
