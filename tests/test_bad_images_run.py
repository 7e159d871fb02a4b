"""A run with unreadable images under data.on_bad_image=skip records what it skipped in results.json."""

from __future__ import annotations

import json

from conftest import compose_train_config, make_image_folder, tiny_overrides

from hnd_lightning.runs.training import train


def test_skipped_images_are_counted_and_named_in_results_json(tmp_path):
    root = make_image_folder(tmp_path / "data")
    bad = []
    for label in range(3):
        path = root / "val" / f"class{label}" / "broken.jpg"
        path.write_text("not a JPEG")
        bad.append(str(path))
    overrides = tiny_overrides(
        "densenet169", "hnd", root, ["data.on_bad_image=skip", "data.eval_batch_size=9", "data.num_workers=0"]
    )
    results = train(compose_train_config(overrides, tmp_path / "run"))
    recorded = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "ok"
    assert recorded["bad_images"] == {"count": 3, "paths": sorted(bad)}
    # the test batch held all nine test images; the six readable ones were tested
    tested = recorded["metrics"]["test/acc1"] * 6
    assert abs(tested - round(tested)) < 1e-5
