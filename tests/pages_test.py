"""jaxdiffattack.pages without a browser: changed words marked, the guide rendered, job
detection and the plain-folder prompts file as one-line errors."""

import json

import pytest
from PIL import Image

from jaxdiffattack import pages
from jaxdiffattack.errors import UserError


def test_marked_prompt_marks_exactly_the_changed_words():
  assert pages.marked_prompt("a photo of a red star", "a photo of a red star") == \
      "a photo of a red star"
  got = pages.marked_prompt("a photo zq of a red star kk", "a photo of a red star")
  assert got == "a photo <mark>zq</mark> of a red star <mark>kk</mark>"
  assert pages.marked_prompt("a <b> star", "a star") == "a <mark>&lt;b&gt;</mark> star"


def test_guide_lists_the_three_verdicts():
  text = pages.guide_html()
  for verdict in ("<b>yes</b>", "<b>no</b>", "<b>unsure</b>"):
    assert verdict in text
  assert text.count("<li>") == 3


def test_rating_page_holds_no_judge_reading_and_escapes_script():
  items = [{"id": "x/1", "image": "img/a.png", "prompt": "a </script> star",
            "source": {"judges": "evaluator FAIL"}}]
  page = pages.rating_html("run-1", items)
  assert "evaluator" not in page and "</script> star" not in page
  assert json.loads(page.split("var DATA=")[1].split(";</script>")[0].replace("<\\/", "</"))[
      "items"] == [{"id": "x/1", "image": "img/a.png", "prompt": "a </script> star"}]


def test_detect_and_folder_errors(tmp_path):
  with pytest.raises(UserError, match="holds no job's outputs"):
    pages.detect(tmp_path)
  Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
  (tmp_path / "p.csv").write_text("file,text\na.png,a star\n")
  with pytest.raises(UserError, match="needs image,prompt"):
    pages.collect_folder(tmp_path, tmp_path / "p.csv")
  (tmp_path / "p.json").write_text('{"b.png": "a star"}')
  with pytest.raises(UserError, match="names image 'b.png', which is not in"):
    pages.collect_folder(tmp_path, tmp_path / "p.json")
  (tmp_path / "q.json").write_text('{"a.png": "a star"')
  with pytest.raises(UserError, match="not valid JSON"):
    pages.collect_folder(tmp_path, tmp_path / "q.json")
  (tmp_path / "r.json").write_text('{"a.png": "a star"}')
  (entry,) = pages.collect_folder(tmp_path, tmp_path / "r.json")
  assert (entry.id, entry.prompt, entry.method) == ("folder/a.png", "a star", "images")


def test_markdown_tables_and_code():
  got = pages.markdown_html("| a | b |\n|---|---|\n| 1 | `x<y` |\nafter")
  assert got.startswith("<table") and "<th>a</th><th>b</th>" in got
  assert "<td>1</td><td><code>x&lt;y</code></td>" in got and got.endswith("<p>after</p>")
