"""User-facing errors: each carries a one-line message naming what is wrong and how to fix it.

Launch scripts catch `UserError` and exit non-zero printing only that line (no traceback).
"""


class UserError(Exception):
  """Bad input from the user: a config value, a model path, a weights file."""


class ConfigError(UserError, ValueError):
  """A config key has a value outside what is allowed."""


def check(condition: bool, key: str, value, allowed: str) -> None:
  """Raises ConfigError('config.<key>=<value> is invalid: <allowed>') unless `condition`."""
  if not condition:
    raise ConfigError(f"config.{key}={value!r} is invalid: {allowed}")
