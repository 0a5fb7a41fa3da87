"""world2/preview.py and benchmarks/world2_preview.py (issue #23): a preview export of a
training workdir loads as world 2's SD with the UNet checkpoint's EMA weights and records each
part's step; the preview census writes its numbers (checked against a recount of the census's
images.jsonl); bad workdirs fail with one line."""
import json
import pathlib
import sys

import flax
import numpy as np
import pytest

from jaxdiffattack.errors import UserError
from jaxdiffattack.world2 import preview
from jaxdiffattack.world2 import train

_ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def preview_export(world2_smoke, tmp_path_factory):
  workdir, config, _ = world2_smoke
  out = tmp_path_factory.mktemp("w2preview") / "export"
  return workdir, config, out, preview.preview_export(config, workdir, out)


@pytest.mark.slow
def test_preview_loads_as_world2_with_the_unet_ema(preview_export, monkeypatch):
  from jaxdiffattack import models  # pylint: disable=g-import-not-at-top
  from jaxdiffattack.models import hub  # pylint: disable=g-import-not-at-top
  workdir, _, out, _ = preview_export
  monkeypatch.setenv(hub.WORLD2_ENV, str(out))
  _, params = models.load_stable_diffusion("world2")
  ck = train.load_checkpoint(workdir, "unet")
  got = flax.traverse_util.flatten_dict(params["unet"])
  want = flax.traverse_util.flatten_dict(ck["ema"])
  assert set(got) == set(want)
  for k in want:
    np.testing.assert_array_equal(np.asarray(got[k]), np.asarray(want[k]), err_msg=str(k))
  # The EMA, not the raw weights (they differ after a few steps).
  raw = flax.traverse_util.flatten_dict(ck["params"])
  assert any(not np.array_equal(raw[k], want[k]) for k in want)


@pytest.mark.slow
def test_preview_metadata_records_each_part_step(preview_export):
  workdir, config, out, info = preview_export
  meta = json.loads((out / "train_metrics.json").read_text())
  assert meta["preview"] is True and json.loads((out / "preview.json").read_text()) == \
      info.record()
  # The smoke workdir has vae_tune and clip_tune checkpoints: those are preferred.
  expected = {"unet": "unet", "vae": "vae_tune", "clip": "clip_tune", "vit": "vit",
              "resnet": "resnet"}
  for part, stage in expected.items():
    rec = meta["parts"][part]
    assert rec["stage"] == stage
    assert rec["step"] == int(train.load_checkpoint(workdir, stage)["step"])
    assert rec["finished"] == (train.stage_done(config, workdir, stage) is not None)
  assert meta["unet_step"] == meta["parts"]["unet"]["step"] == info.unet_step
  vae_json = json.loads((workdir / "stages" / "vae.json").read_text())
  assert meta["scaling_factor"] == pytest.approx(vae_json["metrics"]["scaling_factor"])
  sd_vae = json.loads((out / "sd" / "vae" / "config.json").read_text())
  assert sd_vae["scaling_factor"] == pytest.approx(vae_json["metrics"]["scaling_factor"])


def test_part_falls_back_to_the_untuned_stage_and_skips_absent_classifiers(tmp_path):
  (tmp_path / "checkpoints").mkdir()
  for stage in ("unet", "vae", "clip", "clip_tune"):
    (tmp_path / "checkpoints" / f"{stage}.msgpack").write_bytes(b"x")
  assert preview._which(tmp_path, "vae") == "vae"   # pylint: disable=protected-access
  assert preview._which(tmp_path, "clip") == "clip_tune"   # pylint: disable=protected-access
  assert preview._which(tmp_path, "vit") is None   # pylint: disable=protected-access


def test_bad_workdirs_fail_with_one_line(tmp_path):
  from jaxdiffattack import variants  # pylint: disable=g-import-not-at-top
  config = variants.load_config("train_world2", "smoke")
  (tmp_path / "checkpoints").mkdir()
  (tmp_path / "checkpoints" / "vae.msgpack").write_bytes(b"x")
  (tmp_path / "checkpoints" / "clip.msgpack").write_bytes(b"x")
  with pytest.raises(UserError, match=r"no unet checkpoint \(checkpoints/unet.msgpack\)") as e:
    preview.preview_export(config, tmp_path, tmp_path.parent / "out")
  assert "\n" not in str(e.value)
  with pytest.raises(UserError, match="inside the training workdir"):
    preview.preview_export(config, tmp_path, tmp_path / "export")
  (tmp_path / "checkpoints" / "unet.msgpack").write_bytes(b"x")
  with pytest.raises(UserError, match="no stages/vae.json"):
    preview.preview_export(config, tmp_path, tmp_path.parent / "out")
  assert not (tmp_path.parent / "out").exists()


def _row(label, verdict, kind="single", seed=0, pred=None, failure="holds"):
  return {"label": label, "kind": kind, "scene_kind": "single" if kind != "two_objects" else kind,
          "seed": seed, "failure": {"kind": failure},
          "judges": {"world2_oracle": {"pred": pred, "failure": verdict == "violated",
                                       "unclear": verdict == "unclear"}}}


def test_summarize_counts_rates_shapes_and_ranks_by_hand():
  rows = [_row("red circle", "holds", pred="red circle"),
          _row("red circle", "violated", seed=1, pred="orange circle", failure="other_class"),
          _row("red circle", "unclear", seed=2, failure="unreadable"),
          _row("blue square", "violated", pred="blue rectangle", failure="other_class"),
          _row("blue square", "violated", seed=1, failure="missing"),
          _row("red circle", "holds", kind="two_objects")]
  out = preview.summarize(rows, top=1)
  assert out["images"] == 6
  assert out["by_kind"]["single"] == {"images": 5, "holds": 0.2, "violated": 0.6,
                                      "unclear": 0.2}
  assert out["by_kind"]["two_objects"]["holds"] == 1.0
  assert out["failure_kinds"]["other_class"] == {"images": 2, "share": 2 / 6}
  assert out["failure_kinds"]["holds"]["images"] == 2
  assert sum(v["images"] for v in out["failure_kinds"].values()) == 6
  circle = out["by_shape"]["circle"]   # single-object rows only: 3 red circles
  assert circle == {"images": 3, "holds": 1 / 3, "shape_read": 2 / 3, "hue_read": 1 / 3,
                    "nothing_read": 1 / 3}
  assert out["by_shape"]["square"] == {"images": 2, "holds": 0.0, "shape_read": 0.0,
                                       "hue_read": 0.5, "nothing_read": 0.5}
  assert out["distinct_holds_rates"] == 2
  assert [c["class"] for c in out["worst"]] == ["blue square"]
  assert [c["class"] for c in out["best"]] == ["red circle"]
  assert out["classes"]["red circle"]["holds"] == 0.5   # 2 of 4 (one two-object image)
  assert out["classes"]["blue square"]["commonest_wrong_read"] == "blue rectangle"
  assert preview.grid_classes(out, 5) == ["blue square", "red circle"]
  with pytest.raises(UserError, match="no image rows"):
    preview.summarize([])


@pytest.mark.slow
def test_preview_benchmark_writes_the_results_json_and_grid(preview_export, tmp_path):
  sys.path.insert(0, str(_ROOT / "benchmarks"))
  import world2_preview  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  workdir, _, _, info = preview_export
  census_dir = tmp_path / "census"
  out = world2_preview.main([
      "--workdir", str(workdir), "--train_config", "smoke", "--out", str(tmp_path / "export"),
      "--census_dir", str(census_dir), "--classes", "red circle,blue square", "--seeds", "2",
      "--steps", "2", "--microbatch", "4", "--grid_classes", "2",
      "--results", str(tmp_path / "res_step{step}.json")])
  path = tmp_path / f"res_step{info.unet_step}.json"
  saved = json.loads(path.read_text())
  assert saved["unet_step"] == info.unet_step and saved["preview"]["preview"] is True
  assert saved["code_version"] and saved["date_utc"] and out["images"] == 4
  assert saved["census"]["judges"] == ["world2_oracle"]
  rows = [json.loads(l) for l in (census_dir / "images.jsonl").read_text().splitlines()]
  assert len(rows) == 4
  for kind, rates in saved["by_kind"].items():
    mine = [r["judges"]["world2_oracle"] for r in rows if r["kind"] == kind]
    assert rates["violated"] == sum(j["failure"] for j in mine) / len(mine)
    assert rates["unclear"] == sum(j["unclear"] and not j["failure"] for j in mine) / len(mine)
    assert rates["holds"] + rates["violated"] + rates["unclear"] == pytest.approx(1.0)
  assert {k: v["images"] for k, v in saved["failure_kinds"].items() if v["images"]} == {
      k: sum(r["failure"]["kind"] == k for r in rows) for k in {r["failure"]["kind"]
                                                               for r in rows}}
  assert set(saved["by_shape"]) == {"circle", "square"}
  assert len(saved["worst"]) == len(saved["best"]) == 2
  from PIL import Image  # pylint: disable=g-import-not-at-top
  with Image.open(path.with_suffix(".png")) as im:
    assert im.size[0] > 2 * 64 and im.size[1] > 2 * 64   # 2 rows × 2 seeds, captioned
