"""Silences the "Flax classes are deprecated" notices of diffusers and transformers.

Also the "config attributes ... will be ignored" notes, which weights.py replaces by a real check.

diffusers 0.39 and transformers 4.x log a deprecation warning every time a Flax model or scheduler
is constructed. jaxdiffattack pins those releases on purpose (the last ones with Flax models), so the
notice carries no information for our users and drowns real warnings. This is the one place that
filters it: a `logging.Filter` on the libraries' own handlers (their library loggers do not
propagate, so a filter on the loggers themselves would miss records from child loggers).
"""

import logging

_DEPRECATION_MARKERS = (
    "Flax classes are deprecated",
    "TensorFlow and JAX classes are deprecated",
    # Config keys of PyTorch-written configs that the Flax classes do not take; the loader
    # checks them itself (weights.FLAX_FIXED_CONFIG) and refuses values it cannot honour.
    "but are not expected and will be ignored",
)


class _DropFlaxDeprecation(logging.Filter):

  def filter(self, record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return not any(marker in message for marker in _DEPRECATION_MARKERS)


_FILTER = _DropFlaxDeprecation()


def silence_flax_deprecation() -> None:
  """Installs the filter on diffusers' and transformers' handlers (idempotent)."""
  from diffusers.utils import logging as diffusers_logging  # pylint: disable=g-import-not-at-top
  from transformers.utils import logging as transformers_logging  # pylint: disable=g-import-not-at-top
  for root in (diffusers_logging.get_logger(), transformers_logging.get_logger()):
    targets = list(root.handlers) or [root]
    for target in targets:
      if _FILTER not in target.filters:
        target.addFilter(_FILTER)
