"""The interface every model backend implements; the CLI and library tasks only talk to this.

A backend is constructed with its :class:`~geocli.registry.ModelSpec`. Methods a model does not
support are simply not overridden: the base raises a usage error naming the task, and the registry's
capability tags keep the CLI from offering them in the first place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from geocli.errors import UsageError


class Backend:
    def __init__(self, spec):
        self.spec = spec

    @property
    def name(self) -> str:
        return self.spec.name

    def _unsupported(self, task: str):
        return UsageError(f"model {self.name!r} does not support {task!r}")

    # ---- networks -------------------------------------------------------------------------------
    def build_network(self, cfg: Dict[str, Any], *, training: bool = False):
        """The MindSpore Cell used for inference and export (eval mode unless ``training``)."""
        raise self._unsupported("build_network")

    def export_inputs(self, cfg: Dict[str, Any]) -> List[Any]:
        """Example NumPy inputs that fix the exported graph's input shapes."""
        raise self._unsupported("export")

    def export_graphs(self, cfg: Dict[str, Any], network) -> List[Any]:
        """The graphs ``geoloc export`` writes, as :class:`geocli.export.ExportGraph` (name, cell, inputs).

        The default is one graph: the network for :meth:`export_inputs`. Models with several deployable
        parts (VIGOR's two branches and offset head, SDNet's per-modality branches) override this."""
        from geocli.export import ExportGraph

        return [ExportGraph("", network, self.export_inputs(cfg))]

    def map_weights(self, params: Dict[str, Any], cfg: Dict[str, Any]) -> Dict[str, Any]:
        """Rename a foreign checkpoint's parameters (e.g. a ModelZoo port's) to this network's names.

        The default is the identity; backends that accept other checkpoints override it."""
        return params

    # ---- tasks ----------------------------------------------------------------------------------
    def train_plan(self, cfg: Dict[str, Any], data: Optional[Path], ctx) -> Any:
        """A :class:`geocli.runtime.plan.TrainPlan` for ``geoloc train``."""
        raise self._unsupported("train")

    def evaluate(self, cfg: Dict[str, Any], data: Optional[Path], network, out_dir: Path, ctx) -> Dict[str, float]:
        """Run the published evaluation protocol and return its figures; write per-item files (e.g. a
        per-frame CSV) to out_dir. ``metrics.json`` is written by the caller (geocli.api.write_metrics)."""
        raise self._unsupported("eval")

    def retrieve(self, cfg: Dict[str, Any], inputs: Sequence[Path], network, out_dir: Path, ctx,
                 **options) -> Dict[str, Any]:
        raise self._unsupported("retrieve")

    def match(self, cfg: Dict[str, Any], inputs: Sequence[Path], network, out_dir: Path, ctx,
              **options) -> Dict[str, Any]:
        raise self._unsupported("match")

    def demo(self, data_dir: Path, out_dir: Path, ctx) -> Dict[str, Any]:
        """Generate demo data if missing, train briefly, evaluate; return the figures to show."""
        raise self._unsupported("demo")
