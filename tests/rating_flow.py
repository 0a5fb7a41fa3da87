"""The rating page driven in headless Chromium like a rater would; shared by the page tests
(not a test module): `rate_in_browser` rates every item with the keyboard, reloads midway and
resumes, and exports; `check_ingest` ingests two raters' exports and checks SSR(H), κ and the
confusion numbers against values computed here from the plan and the job's own records."""

import hashlib
import json
import pathlib
import time

import numpy as np
from sklearn.metrics import cohen_kappa_score

from jaxdiffattack import io
from jaxdiffattack import rate

import browser  # pylint: disable=g-bad-import-order

VERDICTS = ("yes", "no", "unsure")


def plan(rater: str, item: str) -> str:
  """The verdict `rater` gives `item` (deterministic, different raters mostly agree)."""
  h = int(hashlib.sha256(item.encode()).hexdigest(), 16)
  verdict = VERDICTS[h % 3]
  if rater != "ann" and (h >> 8) % 4 == 0:   # bob disagrees on about a quarter
    verdict = VERDICTS[(h + 1) % 3]
  return verdict


def _wait(cond, timeout=20.0):
  end = time.time() + timeout
  while time.time() < end:
    got = cond()
    if got:
      return got
    time.sleep(0.05)
  raise AssertionError("timed out")


def rate_in_browser(driver, page: pathlib.Path, rater: str, downloads: pathlib.Path) -> tuple:
  """Rates every item of `page` as `rater` (keyboard: y / n / u; a note on "no"), reloading
  after half of them. Returns (the exported ratings JSON, the order the items were shown in)."""
  from selenium.webdriver.common.by import By  # pylint: disable=g-import-not-at-top
  from selenium.webdriver.common.keys import Keys  # pylint: disable=g-import-not-at-top
  driver.get(page.resolve().as_uri())
  total = driver.execute_script("return DATA.items.length")

  def begin():
    box = driver.find_element(By.ID, "rater")
    box.clear()
    box.send_keys(rater, Keys.ENTER)
    _wait(lambda: driver.find_element(By.ID, "rate").is_displayed())

  begin()
  browser.check_current(driver)     # the first image loads, no console error, not blank
  page_text = driver.find_element(By.TAG_NAME, "body").text
  shown, reloaded = [], False
  for k in range(total):
    if k == total // 2 and not reloaded:
      driver.refresh()
      begin()
      assert driver.find_element(By.ID, "progress").text == f"{k} / {total} rated"
      reloaded = True
    item = driver.find_element(By.ID, "img").get_attribute("data-item")
    assert item not in shown
    shown.append(item)
    verdict = plan(rater, item)
    if verdict == "no":
      note = driver.find_element(By.ID, "note")
      note.click()
      note.send_keys("two blobs", Keys.ENTER)
    driver.find_element(By.TAG_NAME, "body").send_keys(verdict[0])
    _wait(lambda: driver.find_element(By.ID, "progress").text == f"{k + 1} / {total} rated")
  assert driver.find_element(By.ID, "done").is_displayed()
  before = set(downloads.glob("*.json"))
  driver.find_element(By.ID, "export").click()
  path = _wait(lambda: next(iter(set(downloads.glob("*.json")) - before), None))
  _wait(lambda: path.stat().st_size > 0 and _parses(path))
  return json.loads(path.read_text()), shown, path, page_text


def _parses(path):
  try:
    json.loads(path.read_text())
    return True
  except ValueError:
    return False


def check_ingest(workdir: pathlib.Path, files, doc: dict, judge_failure: dict) -> dict:
  """Ingests `files` (ann's and bob's) and checks the summary against figures computed from the
  plan and `judge_failure` ({item: {judge: True/False/None(unclear)}}, read from the job's own
  records by the caller)."""
  summary = rate.ingest(workdir, files)
  ids = [i["id"] for i in doc["items"]]
  a, b = [plan("ann", i) for i in ids], [plan("bob", i) for i in ids]
  assert summary["agreement"]["statistic"] == "cohen"
  assert np.isclose(summary["agreement"]["kappa"], cohen_kappa_score(a, b, labels=list(VERDICTS)))
  cons = {}
  for i, x, y in zip(ids, a, b):
    cons[i] = x if x == y else "unsure"        # two raters: a tie is unsure
  methods = {i["id"]: i["source"]["method"] for i in doc["items"]}
  for m in set(methods.values()):
    sel = [i for i in ids if methods[i] == m]
    h = summary["ssr"][m]["human"]
    assert (h["hits"], h["n"]) == (sum(cons[i] == "no" for i in sel), len(sel)), m
    for judge, block in summary["ssr"][m]["judges"].items():
      fails = [judge_failure[i][judge] for i in sel if judge in judge_failure[i]]
      assert (block["hits"], block["n"]) == (sum(f is True for f in fails), len(fails))
  for judge, g in summary["judges_vs_human"].items():
    for hv in VERDICTS:
      for outcome, want in (("failure", True), ("correct", False), ("unclear", None)):
        expect = sum(cons[i] == hv and judge in judge_failure[i] and
                     judge_failure[i][judge] is want for i in ids)
        assert g["confusion"][hv][outcome] == expect, (judge, hv, outcome)
  human = io.read_jsonl(workdir / "judges" / "human.jsonl")
  assert {r["item"]: r["consensus"] for r in human} == cons
  notes = {r["item"]: r["notes"] for r in human}
  for i in ids:
    assert ("two blobs" in notes[i].values()) == ("no" in (plan("ann", i), plan("bob", i)))
  return summary
