"""Tests of the toy CLIP-format BPE tokenizer."""
import pathlib

from absl.testing import absltest
import transformers

from jaxdiffattack import toy
from jaxdiffattack.toy import tokenizer
from jaxdiffattack.toy import world

_TEXTS = (
    "a photo of a red circle",
    "a close-up photo of a yellow triangle",
    "a photo of a red circle and a blue star",
    "an orange dog on the beach, trending, 4k",
    "zebra quux 1234 !? héllo",
)


class TokenizerTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.dir = pathlib.Path(absltest.get_default_test_tmpdir()) / "tok"
    cls.vocab_size = tokenizer.build_tokenizer_files(cls.dir)
    cls.tok = transformers.CLIPTokenizer.from_pretrained(cls.dir)

  def test_files_in_clip_format(self):
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json",
                 "special_tokens_map.json"):
      self.assertTrue((self.dir / name).exists(), name)
    self.assertTrue((self.dir / "merges.txt").read_text().startswith(
        "#version: 0.2\n"))
    self.assertEqual(len(self.tok), self.vocab_size)
    self.assertEqual(self.tok.model_max_length, 77)
    self.assertEqual(self.tok.bos_token_id, self.vocab_size - 2)
    self.assertEqual(self.tok.eos_token_id, self.vocab_size - 1)
    self.assertEqual(self.tok.pad_token_id, self.vocab_size - 1)

  def test_every_word_is_one_token(self):
    for word in tokenizer.corpus_words():  # The pre-tokenized word list.
      self.assertLen(self.tok.tokenize(word), 1, msg=word)
    for label in world.LABELS:
      self.assertLen(self.tok.tokenize(label), 2, msg=label)
    self.assertGreaterEqual(len(tokenizer.EXTRA_WORDS), 300)

  def test_round_trip(self):
    for text in _TEXTS:
      ids = self.tok(text).input_ids
      self.assertEqual(ids[0], self.tok.bos_token_id)
      self.assertEqual(ids[-1], self.tok.eos_token_id)
      decoded = self.tok.decode(ids, skip_special_tokens=True)
      self.assertEqual(decoded.replace(" ", ""),
                       text.lower().replace(" ", ""), msg=text)
    ids = self.tok("a photo of a red circle").input_ids
    self.assertLen(ids, 8)  # BOS + 6 words + EOS.

  def test_padding_as_stable_diffusion(self):
    ids = self.tok("a red star", padding="max_length", max_length=77).input_ids
    self.assertLen(ids, 77)
    self.assertEqual(ids[-1], self.tok.eos_token_id)

  def test_fast_tokenizer_matches(self):
    fast = transformers.CLIPTokenizerFast.from_pretrained(self.dir,
                                                          from_slow=True)
    for text in _TEXTS[:4]:
      self.assertEqual(fast(text).input_ids, self.tok(text).input_ids)

  def test_deterministic(self):
    other = pathlib.Path(absltest.get_default_test_tmpdir()) / "tok2"
    tokenizer.build_tokenizer_files(other)
    for name in ("vocab.json", "merges.txt"):
      self.assertEqual((self.dir / name).read_text(),
                       (other / name).read_text())

  def test_shipped_tokenizers_match_build(self):
    for sub in (toy.SD_DIR / "tokenizer", toy.CLIP_DIR):
      if not (sub / "vocab.json").exists():
        self.skipTest("no shipped weights")
      for name in ("vocab.json", "merges.txt"):
        self.assertEqual((self.dir / name).read_text(),
                         (sub / name).read_text())


if __name__ == "__main__":
  absltest.main()
