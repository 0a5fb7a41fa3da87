"""World 2: a richer offline world for the seeds' failure modes (issue #23).

``scene`` defines what a scene holds (83 hue x shape classes with close neighbours, sizes,
textures, 1-3 objects, relations, counts, backgrounds; long-tailed class frequency) and draws
scenes deterministically; ``render`` draws them at any resolution; ``captions`` is the
caption grammar (each caption generated from a scene, and parsed back to its facts);
``tokenizer`` writes the CLIP-format BPE whose vocabulary covers the grammar; ``oracle`` reads
rendered or generated images and judges each fact of a caption (holds / violated / unclear);
``oracle_eval`` measures it on rendered splits; ``data`` renders training scenes into shared,
resumable shards; ``train`` trains the world's models in resumable stages (see
docs/world2_model_card.md).
"""
import pathlib

ASSETS_DIR = pathlib.Path(__file__).parent / "assets"
