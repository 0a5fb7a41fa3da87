"""Silences the "Flax classes are deprecated" notices of transformers.

transformers 4.x logs a deprecation warning every time a Flax model is constructed. jaxdiffattack
pins that release on purpose (the last one with Flax models), so the notice carries no information
for our users and drowns real warnings. This is the one place that filters it: a `logging.Filter`
on the library's own handlers (its library logger does not propagate, so a filter on the loggers
themselves would miss records from child loggers). diffusers is no longer used at runtime (the UNet
and VAE are jaxdiffattack's own modules), so its logger is left alone.
"""

import logging

_DEPRECATION_MARKERS = (
    "Flax classes are deprecated",
    "TensorFlow and JAX classes are deprecated",
)


class _DropFlaxDeprecation(logging.Filter):

  def filter(self, record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return not any(marker in message for marker in _DEPRECATION_MARKERS)


_FILTER = _DropFlaxDeprecation()


def silence_flax_deprecation() -> None:
  """Installs the filter on transformers' handlers (idempotent)."""
  from transformers.utils import logging as transformers_logging  # pylint: disable=g-import-not-at-top
  root = transformers_logging.get_logger()
  for target in list(root.handlers) or [root]:
    if _FILTER not in target.filters:
      target.addFilter(_FILTER)
