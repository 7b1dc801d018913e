"""synthmed: synthetic medical image/mask pairs, done without leakage.

The stages as Python functions (each does what its command-line verb does; see `synthmed.api`)::

    import synthmed
    manifest = synthmed.prepare("data/msd_hippocampus", "prep", shape=(32, 32, 32))
    run = synthmed.train("configs/dcgan3d_32.yaml", [f"data.manifest={manifest}", "out=runs/r1"])
    pairs = synthmed.sample(run, "synthetic", seeds="0-99")
    metrics = synthmed.evaluate(manifest, pairs, "evaluation")
    model = synthmed.load_generator(run / "generator.safetensors")   # model.sample(n, seed)

``prepare``, ``train``, ``sample``, ``evaluate``, ``downstream``, ``export`` and ``load_generator`` are
imported on first use, so ``import synthmed`` stays fast (it loads neither torch nor any stage).
"""

import importlib
import sys
import types

__version__ = "0.1.0"

API = ("prepare", "train", "sample", "evaluate", "downstream", "export", "load_generator")
__all__ = ["__version__", *API]
# The API module sits above every stage; this base module reaches it by name, on first use only.
_API_MODULE = "synthmed.api"


class _StageFunction:
    """``synthmed.train`` and its peers: the API function of that name, which is also the name of a stage
    package. Calling it runs the function; its other attributes are the package's (``synthmed.train.loop``,
    ``import synthmed.train.loop as loop``), so the function and the package share the name."""

    def __init__(self, name: str) -> None:
        self._name = name

    @property
    def __wrapped__(self):  # inspect.signature and help() follow it
        return getattr(importlib.import_module(_API_MODULE), self._name)

    @property
    def __doc__(self) -> str:
        return self.__wrapped__.__doc__

    def __call__(self, *args, **kwargs):
        return self.__wrapped__(*args, **kwargs)

    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return getattr(importlib.import_module(f"{__name__}.{self._name}"), attr)

    def __repr__(self) -> str:
        return f"<synthmed.{self._name}: stage function (and package synthmed.{self._name})>"


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value) -> None:
        # importing the package synthmed.train binds it here; the stage function keeps the name
        if isinstance(getattr(self, "__dict__", {}).get(name), _StageFunction):
            return
        super().__setattr__(name, value)


for _name in ("train", "sample", "downstream", "export"):
    globals()[_name] = _StageFunction(_name)
sys.modules[__name__].__class__ = _Package


def __getattr__(name: str):
    if name in API:
        return getattr(importlib.import_module(_API_MODULE), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
