"""analysis.overlap: token positions, map cosine / IoU / mass inside vs NumPy statements."""

import pathlib

import numpy as np
import pytest
import transformers

from jaxdiffattack import toy as toy_lib
from jaxdiffattack.analysis import overlap
from jaxdiffattack.errors import ConfigError


@pytest.fixture(scope="module")
def tokenizer():
  path = pathlib.Path(toy_lib.__file__).parent / "assets" / "sd" / "tokenizer"
  return transformers.CLIPTokenizer.from_pretrained(str(path), local_files_only=True)


def test_word_token_indices(tokenizer):
  prompt = "a photo of a red circle and a blue circle"
  assert overlap.word_token_indices(tokenizer, prompt, "circle") == [6]      # BOS = 0
  assert overlap.word_token_indices(tokenizer, prompt, "circle", occurrence=1) == [10]
  assert overlap.word_token_indices(tokenizer, prompt, "red circle") == [5, 6]
  with pytest.raises(ValueError, match="star"):
    overlap.word_token_indices(tokenizer, prompt, "star")


def test_word_maps_average_steps_and_tokens():
  rng = np.random.default_rng(0)
  attention = rng.uniform(size=(2, 5, 4, 4, 7))
  got = overlap.word_maps(attention, [[[1], [2, 3]], [[4], [5]]], slice(2, 5))
  np.testing.assert_allclose(got[0, 1], attention[0, 2:5, ..., 2:4].mean((0, -1)))
  np.testing.assert_allclose(got[1, 0], attention[1, 2:5, ..., 4].mean(0))


def test_cosine_iou_and_mass_inside():
  a = np.zeros((8, 8))
  b = np.zeros((8, 8))
  a[:4, :4] = 1.0          # 16 px
  b[2:6, :4] = 2.0         # 16 px, 8 shared
  np.testing.assert_allclose(overlap.cosine(a, b), 8 * 2 / (4 * 8))
  np.testing.assert_allclose(overlap.iou(a, b, 0.5), 8 / 24)
  np.testing.assert_allclose(overlap.cosine(a, a), 1.0)
  mask = np.zeros((32, 32), bool)
  mask[:8, :16] = True     # the top-left 2×4 latent pixels at 4× upsampling
  np.testing.assert_allclose(overlap.mass_inside(a, mask), 8 / 16)


def test_step_range():
  assert overlap.step_range(20, (0.0, 1.0)) == slice(0, 20)
  assert overlap.step_range(20, (0.5, 0.75)) == slice(10, 15)
  assert overlap.step_range(4, (0.9, 1.0)) == slice(3, 4)
  with pytest.raises(ConfigError, match="attention.steps"):
    overlap.step_range(20, (0.5, 0.2))
