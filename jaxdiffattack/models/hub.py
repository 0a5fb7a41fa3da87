"""Where a model comes from: the `toy` / `world2` aliases, a local directory, or a hub id.

Every model argument in jaxdiffattack (generator, CLIP, classifiers) goes through `resolve`, so the
shipped offline worlds and real checkpoints take exactly the same loading path afterwards. `world2`
resolves to `jaxdiffattack/world2/assets/<kind>` (written by world 2's training export), or to
`$JAXDIFFATTACK_WORLD2_ASSETS/<kind>` when that variable names a directory (e.g. a smoke export:
`python launch/train_world2.py --config configs/train_world2.py:smoke --workdir DIR` writes
DIR/export). Hub downloads
only ever fetch configs, tokenizer files, Flax msgpack and safetensors weights — never pickles.
"""

import os
import pathlib

from jaxdiffattack.errors import UserError

TOY_ALIAS = "toy"
TOY_LV_ALIAS = "toy_lv"
TOY_ROOT = pathlib.Path(__file__).resolve().parent.parent / "toy" / "assets"
# Which shipped directory each kind of model resolves to (`evaluator`: world 2's held-out RegNet;
# `robust`: world 2's noise-trained ResNet surrogate; the toy world has neither).
TOY_KINDS = ("sd", "clip", "vit", "resnet", "robust", "evaluator")
WORLD2_ALIAS = "world2"
WORLD2_ENV = "JAXDIFFATTACK_WORLD2_ASSETS"   # a directory holding sd/, clip/, vit/, ... instead
WORLD2_COMMAND = ("python launch/train_world2.py --config configs/train_world2.py --workdir DIR "
                  "--config.export.to_assets=True")
# Per alias: its shipped generator directory and the command that regenerates it. `toy_lv` is the
# learned-variance toy generator (toy/train_lv.py); it shares the toy world's CLIP and classifiers.
TOY_GENERATORS = {
    TOY_ALIAS: ("sd", "python launch/train_toy.py --config configs/train_toy.py"),
    TOY_LV_ALIAS: ("sd_lv", "python launch/train_toy.py --config "
                   "configs/train_toy.py:learned_variance --config.export.to_assets=True"),
}

# Only these files are fetched from the hub: no .bin/.ckpt/.pt (pickle executes code).
HUB_ALLOW_PATTERNS = ("*.json", "*.txt", "*.model", "*.msgpack", "*.safetensors")


class ModelNotFoundError(UserError, FileNotFoundError):
  """A model name that is neither `toy`, an existing directory, nor a reachable hub id."""


def _looks_like_hub_id(name: str) -> bool:
  parts = name.split("/")
  return (len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))
          and not os.path.exists(name))


def resolve(name_or_path: str, kind: str) -> pathlib.Path:
  """Returns the local directory holding model `name_or_path`.

  Args:
    name_or_path: `toy` (or `toy_lv`, the learned-variance toy generator), a local directory, or
      a hub id such as `openai/clip-vit-large-patch14`.
    kind: one of TOY_KINDS; which shipped model `toy` / `world2` means here.

  Raises:
    ModelNotFoundError: with a one-line message saying what to download and where to put it.
  """
  if kind not in TOY_KINDS:
    raise ValueError(f"model kind {kind!r} is not one of {TOY_KINDS}")
  if not isinstance(name_or_path, (str, os.PathLike)) or not str(name_or_path):
    raise ModelNotFoundError(
        f"model path is empty ({name_or_path!r}); pass 'toy', a local directory or a hub id")
  name = str(name_or_path)
  if name in TOY_GENERATORS:
    sd_dir, command = TOY_GENERATORS[name]
    path = TOY_ROOT / (sd_dir if kind == "sd" else kind)
    if not path.is_dir():
      raise ModelNotFoundError(
          f"the toy-world {kind!r} model is missing at {path}; reinstall jaxdiffattack or "
          f"regenerate it with `{command}`")
    return path
  if name == WORLD2_ALIAS:
    return world2_dir(kind)
  path = pathlib.Path(name).expanduser()
  if path.is_dir():
    return path.resolve()
  if path.exists():
    raise ModelNotFoundError(f"model path {name!r} is a file; pass the model's directory")
  if _looks_like_hub_id(name):
    return _download(name)
  raise ModelNotFoundError(
      f"model {name!r} is not 'toy', an existing directory, or a hub id (owner/name)")


def world2_root() -> pathlib.Path:
  """World 2's model directory: $JAXDIFFATTACK_WORLD2_ASSETS if set, else the package's assets."""
  env = os.environ.get(WORLD2_ENV, "")
  if env:
    return pathlib.Path(env).expanduser()
  return pathlib.Path(__file__).resolve().parent.parent / "world2" / "assets"


def world2_dir(kind: str) -> pathlib.Path:
  """The `world2` alias's directory of `kind`; a one-line error naming the export command when it
  is missing."""
  root = world2_root()
  path = root / kind
  if not path.is_dir():
    where = (f"${WORLD2_ENV}={os.environ[WORLD2_ENV]}" if os.environ.get(WORLD2_ENV)
             else "the package")
    raise ModelNotFoundError(
        f"the world-2 {kind!r} model is missing at {path} ({where}); train and export world 2 "
        f"with `{WORLD2_COMMAND}`, or set ${WORLD2_ENV} to an export directory")
  return path.resolve()


def _download(repo_id: str) -> pathlib.Path:
  """Fetches a hub snapshot (cache first), refusing to fetch pickle weights."""
  try:
    import huggingface_hub  # pylint: disable=g-import-not-at-top
  except ImportError as e:  # pragma: no cover - a dependency of diffusers
    raise ModelNotFoundError(f"cannot fetch {repo_id!r}: huggingface_hub is missing") from e
  kwargs = dict(repo_id=repo_id, allow_patterns=list(HUB_ALLOW_PATTERNS))
  try:
    return pathlib.Path(huggingface_hub.snapshot_download(local_files_only=True, **kwargs))
  except Exception:  # pylint: disable=broad-except  # not cached: try the network below
    pass
  try:
    return pathlib.Path(huggingface_hub.snapshot_download(**kwargs))
  except Exception as e:  # pylint: disable=broad-except
    patterns = " ".join(f"'{p}'" for p in HUB_ALLOW_PATTERNS)
    raise ModelNotFoundError(
        f"cannot download {repo_id!r} ({type(e).__name__}); on a machine with network run "
        f"`huggingface-cli download {repo_id} --include {patterns} --local-dir DIR`, copy DIR "
        "here and pass its path instead of the hub id") from None
