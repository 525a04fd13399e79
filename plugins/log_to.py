"""``--log-to KIND:TARGET``: the built-in user of ``benchbone_configure``, registering the loggers a run asks for."""
from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

from benchbone import UsageError, hookimpl

# logger kind -> (the module whose ``logger(target)`` makes the plugin, the module it needs, the extra that
# installs it, whether TARGET is a local path). Loggers are off unless asked for.
LOGGERS = {
    "mlflow": ("benchbone_plugins.mlflow_logger", "mlflow", "mlflow", True),
    "tensorboard": ("benchbone_plugins.tensorboard_logger", "tensorboard", "tensorboard", True),
    "wandb": ("benchbone_plugins.wandb_logger", "wandb", "wandb", False),
}


def logger(target: str) -> tuple[str, object]:
    """``("KIND:/absolute/TARGET", plugin)`` for one ``--log-to KIND:TARGET`` (a local path, made absolute; a
    W&B project is kept as given); a missing extra is one line naming it."""
    kind, _, where = target.partition(":")
    if kind not in LOGGERS or not where:
        raise UsageError(f"--log-to {target!r}: give KIND:TARGET with KIND one of {', '.join(LOGGERS)}, "
                         "e.g. --log-to mlflow:runs.db")
    module_name, needs, extra, is_path = LOGGERS[kind]
    if importlib.util.find_spec(needs) is None:
        raise UsageError(f"--log-to {kind}:... needs {needs}, which is not installed: pip install 'benchbone[{extra}]'")
    if is_path:
        where = str(Path(where).expanduser().absolute())
    return f"{kind}:{where}", importlib.import_module(module_name).logger(where)


@hookimpl
def benchbone_configure(config):
    """Register one logger plugin per ``config.options["log_to"]`` target, named ``KIND:/absolute/TARGET`` (or
    ``wandb:PROJECT``), and leave those names in the options (an executor's worker, configured with them, logs
    to the same places)."""
    resolved = []
    for target in config.options.get("log_to", ()):
        name, plugin = logger(target)
        if not config.pm.has_plugin(name):
            config.pm.register(plugin, name=name)
        resolved.append(name)
    config.options["log_to"] = resolved
