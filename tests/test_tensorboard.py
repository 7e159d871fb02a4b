"""What a user watches while a run trains: the terminal without Lightning's noise, and TensorBoard with
the run's curves in one event file, the run described in words, and its settings beside its final metrics."""

from __future__ import annotations

import logging

import pytest
from conftest import compose_train_config, tiny_overrides

from hnd_lightning.runs.training import train


def test_a_run_is_one_event_file_with_its_curves_text_and_hparams(image_folder, tmp_path, caplog):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    overrides = [o for o in tiny_overrides("densenet169", "hnd", image_folder) if o != "debug=fast_dev_run"] + [
        "trainer.accelerator=cpu",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "trainer.limit_test_batches=1",
        "trainer.log_every_n_steps=1",
        "data.num_workers=0",
        "data.persistent_workers=false",
        "test_quantized=true",
    ]
    with caplog.at_level(logging.INFO):
        results = train(compose_train_config(overrides, tmp_path))
    # Lightning's line for every checkpoint saved without saying what it holds, and its advertisement
    assert not [r for r in caplog.records if "weights_only" in r.getMessage() or "Tip" in r.getMessage()]

    # fit, test and the HPARAMS record: one event file
    assert len(list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))) == 1
    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss_step", "val/acc1", "test/acc1", "test_q8/acc1"} <= scalars
    # no card of the epoch number, none of a single parameter count
    assert "epoch" not in scalars and "trainable_parameters" not in scalars
    assert [point.step for point in events.Scalars("train/loss_step")] == [0, 1]  # a curve over the steps
    text = events.Tensors("run/text_summary")[0].tensor_proto.string_val[0].decode()
    assert f"{results['trainable_parameters']:,} of" in text
    assert "3 x 5 x 5 tensor" in text and "8-bit link" in text  # B = 3 at 32 x 32: what the device sends

    content = events.PluginTagToContent("hparams")
    session = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert session.hparams["bottleneck_channels"].number_value == 3
    assert session.hparams["method"].string_value == "hnd"
    assert session.hparams["trainable_parameters"].number_value == results["trainable_parameters"]
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    shown = {info.name.tag for info in experiment.metric_infos}
    assert {"test/acc1", "test_q8/acc1", "best/val/acc1"} <= shown
    # HPARAMS reads the test metric the run logged once; it is not logged a second time
    assert [point.value for point in events.Scalars("test/acc1")] == [pytest.approx(results["metrics"]["test/acc1"])]
    assert events.Scalars("best/val/acc1")[-1].value == pytest.approx(results["metrics"]["best/val/acc1"])
