"""ATM's prompt sets, class-word positions, attack modes and the similarity stand-in
(jaxdiffattack.attacks.prompts / modes / similarity), on the toy tokenizer."""

import logging
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from transformers import CLIPTokenizer

from jaxdiffattack import labels
from jaxdiffattack import toy
from jaxdiffattack.attacks import modes
from jaxdiffattack.attacks import prompts
from jaxdiffattack.attacks import similarity
from jaxdiffattack.errors import UserError


@pytest.fixture(scope="module")
def sd():
  """Only what tokenizing needs: the toy SD's tokenizer and its 77-token limit."""
  tokenizer = CLIPTokenizer.from_pretrained(str(toy.ASSETS_DIR / "sd" / "tokenizer"))
  return types.SimpleNamespace(tokenizer=tokenizer, max_length=int(tokenizer.model_max_length))


def test_short_and_long_toy_sets(sd):
  short = prompts.load("short", "short", labels.toy())
  assert len(short) == 20 and short.prompts[0] == "a photo of a red circle and a"
  enc = prompts.encode(sd, short)
  # BOS a photo of a [red circle] and a EOS: the class word is tokens 5 and 6.
  assert enc.class_mask[0].nonzero()[0].tolist() == [5, 6]
  assert enc.lengths[0] == 10 and enc.class_text == tuple(labels.toy().names)
  long = prompts.load("toy_long", "long", labels.toy(), per_label=2)
  assert len(long) == 40 and len(set(long.prompts)) == 40
  enc = prompts.encode(sd, long)
  words = [len(p.replace(",", " ").replace(";", " ").replace(":", " ").split())
           for p in long.prompts]
  assert min(words) >= 24 and max(words) <= 29
  assert enc.lengths.max() <= sd.max_length
  for i, label in enumerate(long.labels):
    ids = enc.ids[i][enc.class_mask[i]].tolist()
    assert sd.tokenizer.decode(ids).strip() == labels.toy().names[label]
  imagenet = prompts.load("short", "short", labels.imagenet1k(), labels=[0, 21])
  assert imagenet.prompts == ("a photo of a tench and a", "a photo of a kite (bird of prey) and a")


def test_csv_prompt_file(sd, tmp_path):
  path = tmp_path / "long.csv"
  path.write_text('sentence,class,label\n"Two Red  Circles lie on a table, side by side.",'
                  'red circle,\n"A blue star, drawn in a hurry.",blue star,17\n', encoding="utf-8")
  got = prompts.load(str(path), "long", labels.toy())
  assert got.labels == (0, 17) and got.class_words == ("red circle", "blue star")
  enc = prompts.encode(sd, got)
  assert enc.class_text[0] == "red circles"        # the clean prompt's own form of the class word
  assert prompts.load(str(path), "long", labels.toy(), labels=[17]).prompts == (
      "A blue star, drawn in a hurry.",)


@pytest.mark.parametrize("content, message", [
    (b"prompt,classname\n\xff\xfe bad,red circle\n", "is not valid UTF-8"),
    (b"", "is empty"),
    (b"prompt,classname\n", "is empty: give at least one prompt"),
    (b"prompt,classname\na photo of a circle,red circle\n", "does not contain its class word"),
    (b"prompt,classname\na purple blob,purple blob\n", "is not in label set"),
    (b"text,classname\na red circle,red circle\n", "has no 'prompt' column"),
    (b"prompt,classname\n,red circle\n", "the prompt is empty"),
    (b"prompt,classname,label\na red circle,red circle,99\n", "outside label set"),
])
def test_bad_prompt_files_are_one_line_errors(tmp_path, content, message):
  path = tmp_path / "p.csv"
  path.write_bytes(content)
  with pytest.raises(UserError, match=message) as e:
    prompts.load(str(path), "long", labels.toy())
  assert "\n" not in str(e.value)


def test_bad_sets_are_one_line_errors(sd):
  with pytest.raises(UserError, match="neither one of"):
    prompts.load("no_such_set", "short", labels.toy())
  with pytest.raises(UserError, match="empty"):
    prompts.load("short", "short", labels.toy(), labels=[])
  bad = prompts.PromptSet("short", ("a photo of a dog",), ("red circle",), (0,))
  with pytest.raises(UserError, match="does not contain its class word"):
    prompts._check(bad, "short")


def test_over_long_prompts_warn_and_a_lost_class_word_is_an_error(sd, caplog):
  filler = " ".join(["big"] * 80)
  ok = prompts.PromptSet("long", (f"a red circle {filler}",), ("red circle",), (0,))
  with caplog.at_level(logging.WARNING):
    enc = prompts.encode(sd, ok)
  assert "8 tokens dropped" in caplog.text              # 3 + 80 + BOS + EOS = 85 > 77
  assert enc.lengths[0] == 77 and enc.ids[0, -1] == sd.tokenizer.eos_token_id
  lost = prompts.PromptSet("long", (f"{filler} a red circle",), ("red circle",), (0,))
  with pytest.raises(UserError, match="beyond the model's 77-token limit"):
    prompts.encode(sd, lost)


def test_class_word_present():
  assert prompts.class_word_present("a Red  Circle and a blue", "red circle")
  assert not prompts.class_word_present("a bred circle and a", "red circle")
  assert not prompts.class_word_present("a red circles", "red circle")
  assert not prompts.class_word_present("a red square", "red circle")
  assert not prompts.class_word_present("anything", "")


def _toy_prompts(sd):
  enc = prompts.encode(sd, prompts.load("short", "short", labels.toy(), labels=[0, 13]))
  return enc


@pytest.mark.parametrize("mode", sorted(modes.MODES))
def test_modes_never_free_the_class_word_or_bos(sd, mode):
  enc = _toy_prompts(sd)
  free = modes.free_positions(mode, enc.ids, enc.lengths, enc.class_mask, extend_tokens=3)
  assert not (free & enc.class_mask).any() and not free[:, 0].any()
  expected = {
      "replace": [1, 2, 3, 4, 7, 8],            # a photo of a · and a
      "extend": [9, 10, 11],                    # EOS and the next two padding positions
      "released": list(range(9, 77)),           # every EOS/padding position
  }[mode]
  assert free[0].nonzero()[0].tolist() == expected


def test_mode_errors(sd):
  enc = _toy_prompts(sd)
  with pytest.raises(UserError, match="config.mode='swap' is invalid"):
    modes.free_positions("swap", enc.ids, enc.lengths, enc.class_mask)
  with pytest.raises(UserError, match="extend_tokens=0"):
    modes.free_positions("extend", enc.ids, enc.lengths, enc.class_mask, extend_tokens=0)
  bare = prompts.encode(sd, prompts.PromptSet("short", ("red circle",), ("red circle",), (0,)))
  with pytest.raises(UserError, match="leaves prompt 0 nothing to change"):
    modes.free_positions("replace", bare.ids, bare.lengths, bare.class_mask)


def test_idf_and_weights_against_the_formula():
  ids = np.array([[9, 1, 2, 3, 8, 8], [9, 1, 4, 8, 8, 8], [9, 1, 2, 2, 5, 8]])
  lengths = np.array([5, 4, 6])
  idf = similarity.idf_table(ids, lengths, 10)
  df = {1: 3, 2: 2, 3: 1, 4: 1, 5: 1}               # prompts containing each real token
  for v in range(10):
    np.testing.assert_allclose(idf[v], np.log(4 / (df.get(v, 0) + 1)), rtol=1e-6)
  w = similarity.reference_weights(ids, lengths, idf)
  np.testing.assert_allclose(w.sum(1), 1.0, rtol=1e-6)
  assert (w[:, 0] == 0).all() and w[0, 4] == 0 and w[1, 3] == 0    # BOS, EOS
  # Real tokens and padding (EOS after EOS: a token in no prompt, idf log 4) by their idf.
  np.testing.assert_allclose(w[0, [1, 2, 3, 5]], idf[[1, 2, 3, 8]] / idf[[1, 2, 3, 8]].sum(),
                             rtol=1e-6)
  np.testing.assert_allclose(w[1, [1, 2, 4, 5]], idf[[1, 4, 8, 8]] / idf[[1, 4, 8, 8]].sum(),
                             rtol=1e-6)
  assert w[0, 5] > w[0, 1:4].max()       # padding outweighs every real token (largest idf)


def test_bertscore_recall_against_a_loop_and_differentiable():
  rng = np.random.default_rng(0)
  ref, cand = rng.normal(size=(2, 6, 5)), rng.normal(size=(2, 6, 5))
  w = rng.random((2, 6))
  unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)
  for b in range(2):
    expected = sum(w[b, i] * max(unit(ref[b, i]) @ unit(cand[b, j]) for j in range(1, 5))
                   for i in range(1, 5))           # first and last position cropped, both sides
    got = similarity.bertscore_recall(jnp.asarray(ref), jnp.asarray(cand), jnp.asarray(w))[b]
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)
  w1 = np.zeros(6)
  w1[1:5] = 0.25
  np.testing.assert_allclose(float(similarity.bertscore_recall(ref[0], ref[0], w1)), 1.0, rtol=1e-6)
  g = jax.grad(lambda c: similarity.bertscore_recall(ref[0], c, w[0]))(jnp.asarray(cand[0]))
  assert np.isfinite(np.asarray(g)).all() and np.abs(np.asarray(g)).sum() > 0
