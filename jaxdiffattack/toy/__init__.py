"""The toy world: a small trained text-to-image model, CLIP and classifiers.

``world`` renders the data, ``tokenizer`` builds the CLIP-format BPE,
``train`` trains and exports every model, ``train_lv`` the learned-variance
generator (``SD_LV_DIR``, model alias ``toy_lv``), ``evaluate`` measures generation
quality, ``oracle`` reads toy images without a model (the judge-free stand-in for
human judgement). ``ASSETS_DIR`` holds the shipped weights (diffusers / transformers
directory layouts, Flax msgpack).
"""
import pathlib

ASSETS_DIR = pathlib.Path(__file__).parent / "assets"
SD_DIR = ASSETS_DIR / "sd"
SD_LV_DIR = ASSETS_DIR / "sd_lv"
CLIP_DIR = ASSETS_DIR / "clip"
VIT_DIR = ASSETS_DIR / "vit"
RESNET_DIR = ASSETS_DIR / "resnet"
