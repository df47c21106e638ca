"""logger=tensorboard over a multirun: `tensorboard --logdir outputs` finds every run, and its HParams tab holds
the axis choices and seed of each with the best validation and test values of results.json."""
import pytest
from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from tests.conftest import results_of, run_cli


def test_multirun_hparams_and_metrics_match_results_json(tmp_path):
    run_cli(tmp_path, "-m", "logger=tensorboard", "loss=cosent,sbert", "trainer.max_epochs=1", "seed=7")
    runs = results_of(tmp_path)
    assert sorted(r["choices"]["loss"] for r in runs) == ["cosent", "sbert"]
    outputs = tmp_path / "outputs"
    board = EventMultiplexer().AddRunsFromDirectory(str(outputs))   # what `tensorboard --logdir outputs` reads
    board.Reload()
    hparams = board.PluginRunToTagToContent("hparams")
    for results in runs:
        assert results["status"] == "completed"
        run = str(outputs.joinpath(results["tensorboard"]["dir"]).relative_to(outputs))
        assert run in board.Runs()
        plugin = {tag.split("/")[-1]: HParamsPluginData.FromString(raw) for tag, raw in hparams[run].items()}
        logged = plugin["session_start_info"].session_start_info.hparams
        assert {k: logged[k].string_value for k in results["choices"]} == results["choices"]
        assert logged["seed"].number_value == results["seed"] == 7
        best = f"best/{results['best']['metric']}"
        assert {m.name.tag for m in plugin["experiment"].experiment.metric_infos} == {best, "test/spearman"}
        assert "hp_metric" not in board.GetAccumulator(run).Tags()["scalars"]   # default_hp_metric: false
        assert board.Scalars(run, "test/spearman")[-1].value == pytest.approx(results["test"]["test/spearman"],
                                                                              abs=1e-6)
        assert board.Scalars(run, best)[-1].value == pytest.approx(results["best"]["value"], abs=1e-6)


def test_a_tensorboard_that_fails_at_close_is_recorded_and_does_not_raise(tmp_path):
    from lightning.pytorch.loggers import TensorBoardLogger

    from hub.loggers import close_loggers

    (tmp_path / "tensorboard").write_text("a file where the event folder should be")
    logger = TensorBoardLogger(tmp_path, name="tensorboard", version="", default_hp_metric=False)
    results = {"status": "completed", "choices": {"loss": "cosent"}, "seed": 1, "test": {"test/spearman": 0.5}}
    close_loggers([logger], results)
    assert results["tensorboard"]["error"].startswith(("FileExistsError", "NotADirectoryError"))
