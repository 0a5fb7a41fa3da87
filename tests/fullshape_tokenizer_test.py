"""The real 49,408-token CLIP tokenizer built offline (tests/fullshape_models.py) tokenises as
open_clip's own SimpleTokenizer does, and as jaxdiffattack.text sees it in an SD checkpoint."""

import json

import numpy as np
import pytest

import fullshape_models

SENTENCES = (
    "a photo of a tench",
    "A photo of a Goldfish, swimming in a bowl!",
    "an oil painting of the Eiffel tower at night — très belle",
    "a blurry photo of a great white shark",
    "itap of a cocktail shaker",
    "a low resolution photo of the   axolotl   ",
    "two dogs and 3 cats on a sofa (digital art), 4k",
    "",
)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
  return fullshape_models.write_clip_tokenizer(tmp_path_factory.mktemp("clip_tokenizer"))


def test_vocabulary_is_clips(tokenizer_dir):
  vocab = json.loads((tokenizer_dir / "vocab.json").read_text())
  assert len(vocab) == fullshape_models.VOCAB_SIZE == 49408
  assert sorted(vocab.values()) == list(range(49408))
  assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407
  assert vocab["!"] == 0 and vocab["a</w>"] == 320 and vocab["photo</w>"] == 1125
  merges = (tokenizer_dir / "merges.txt").read_text().splitlines()
  assert merges[0] == "#version: 0.2" and len(merges) - 1 == 49408 - 512 - 2


def test_transformers_tokenizer_matches_open_clip(tokenizer_dir):
  from transformers import CLIPTokenizer  # pylint: disable=g-import-not-at-top
  ours = CLIPTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
  assert len(ours) == 49408 and ours.model_max_length == 77
  ids = ours(list(SENTENCES), padding="max_length", max_length=77, truncation=True,
             return_tensors="np")["input_ids"]
  ref = fullshape_models.open_clip_tokenize(SENTENCES)        # [N, 77], zero-padded
  for row, ref_row, text in zip(ids, ref, SENTENCES):
    n = int(np.argmax(ref_row == 49407)) + 1                  # up to and including <|endoftext|>
    np.testing.assert_array_equal(row[:n], ref_row[:n], err_msg=text)
    assert (row[n:] == 49407).all()                           # SD 1.x pads with <|endoftext|>
  assert len(set(map(tuple, ids))) == len(SENTENCES)


def test_sd2_pad_token_and_long_prompt_truncation(tmp_path):
  from transformers import CLIPTokenizer  # pylint: disable=g-import-not-at-top
  tok = CLIPTokenizer.from_pretrained(
      str(fullshape_models.write_clip_tokenizer(tmp_path, pad_token="!")), local_files_only=True)
  ids = tok(["a photo of a tench"], padding="max_length", max_length=77)["input_ids"][0]
  ref = fullshape_models.open_clip_tokenize(["a photo of a tench"])[0]
  assert ids[:8] == [49406, 320, 1125, 539, 320, 1149, 634, 49407] == list(ref[:8])
  assert ids[8:] == [0] * 69                                  # SD 2.x pads with "!" (id 0)
  long = " ".join(["goldfish"] * 100)
  ref = fullshape_models.open_clip_tokenize([long])[0]
  got = tok([long], padding="max_length", max_length=77, truncation=True)["input_ids"][0]
  np.testing.assert_array_equal(got[:76], ref[:76])           # open_clip ends with EOT at 76
  assert got[76] == ref[76] == 49407


def test_missing_merges_file_is_one_line_error(tmp_path):
  import gzip  # pylint: disable=g-import-not-at-top
  (tmp_path / fullshape_models.BPE_FILE).write_bytes(gzip.compress(b"#v\na b\n"))
  with pytest.raises(ValueError, match="expected 49408"):
    fullshape_models.write_clip_tokenizer(tmp_path / "out", source=tmp_path)
