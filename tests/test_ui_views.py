"""The MLflow UI's saved views that repro writes into every experiment it opens (`repro.ui_views`)."""

from __future__ import annotations

import json

from mlflow.tracking import MlflowClient

from repro import tracking
from repro.ui_url import main as ui_url_main
from repro.ui_url import ui_link
from repro.ui_views import (
    ENERGY_VIEW_KEY,
    MAX_VIEW_CHARS,
    SWEEP_VIEW_KEY,
    VIEW_TAG_PREFIX,
    SavedView,
    write_views,
)


def _views(client: MlflowClient, experiment_id: str) -> dict[str, dict]:
    """key -> the view's envelope, with its `state` parsed too."""
    views = {}
    for tag, value in client.get_experiment(experiment_id).tags.items():
        if tag.startswith(VIEW_TAG_PREFIX):
            envelope = json.loads(value)
            views[tag.removeprefix(VIEW_TAG_PREFIX)] = {**envelope, "state": json.loads(envelope["state"])}
    return views


def test_an_opened_experiment_gets_the_energy_and_sweep_views(tracking_uri: str) -> None:
    experiment_id = tracking.open_experiment(tracking_uri, "repro")
    views = _views(MlflowClient(tracking_uri), experiment_id)
    assert set(views) == {ENERGY_VIEW_KEY, SWEEP_VIEW_KEY}
    energy, by_sweep = views[ENERGY_VIEW_KEY], views[SWEEP_VIEW_KEY]
    assert (energy["name"], by_sweep["name"]) == ("Energy per image", "By sweep")
    for view in (energy, by_sweep):
        assert isinstance(view["createdAt"], int) and view["updatedAt"] >= view["createdAt"]
        assert view["state"]["orderByKey"] == "metrics.`energy_j_per_image`"
        assert view["state"]["orderByAsc"] is True
        assert set(view["state"]["selectedColumns"]) == {
            "metrics.`energy_j_per_image`", "metrics.`gpu_energy_j_per_image`", "metrics.`f1`",
            "metrics.`duration_s`", "metrics.`trained_epochs`", "tags.`repro.model`", "tags.`repro.gpu`",
            "tags.`energy_estimated`",
        }  # fmt: skip
    assert energy["state"]["groupBy"] is None  # sorted by energy, so every job is a row of its own
    assert by_sweep["state"]["groupBy"] == {
        "aggregateFunction": "average",
        "groupByKeys": [{"mode": "tag", "groupByData": "repro.sweep_dir"}],
    }


def test_reopening_updates_repro_views_in_place_and_leaves_the_users_alone(tracking_uri: str) -> None:
    client = MlflowClient(tracking_uri)
    experiment_id = tracking.open_experiment(tracking_uri, "repro")
    first = _views(client, experiment_id)
    mine = json.dumps({"name": "Mine", "createdAt": 1, "updatedAt": 1, "state": "{}"})
    client.set_experiment_tag(experiment_id, VIEW_TAG_PREFIX + "3f2a-user", mine)
    tracking.open_experiment(tracking_uri, "repro")
    assert (
        _views(client, experiment_id)[ENERGY_VIEW_KEY] == first[ENERGY_VIEW_KEY]
    )  # unchanged: not rewritten

    # An older repro's view (another state) is updated under the same key, keeping its creation time.
    old = json.loads(client.get_experiment(experiment_id).tags[VIEW_TAG_PREFIX + ENERGY_VIEW_KEY])
    old_state = {"orderByKey": "metrics.`f1`"}
    client.set_experiment_tag(
        experiment_id, VIEW_TAG_PREFIX + ENERGY_VIEW_KEY, json.dumps({**old, "state": json.dumps(old_state)})
    )
    # A view the user saved over in the UI (the UI writes no `createdBy`) is theirs now.
    users_edit = json.dumps(
        {"name": "By sweep", "createdAt": 5, "updatedAt": 9, "state": '{"groupBy": null}'}
    )
    client.set_experiment_tag(experiment_id, VIEW_TAG_PREFIX + SWEEP_VIEW_KEY, users_edit)
    tracking.open_experiment(tracking_uri, "repro")

    tags = client.get_experiment(experiment_id).tags
    views = _views(client, experiment_id)
    assert len([tag for tag in tags if tag.startswith(VIEW_TAG_PREFIX)]) == 3  # no duplicate
    assert views[ENERGY_VIEW_KEY]["state"] == first[ENERGY_VIEW_KEY]["state"]
    assert views[ENERGY_VIEW_KEY]["createdAt"] == first[ENERGY_VIEW_KEY]["createdAt"]
    assert tags[VIEW_TAG_PREFIX + SWEEP_VIEW_KEY] == users_edit
    assert tags[VIEW_TAG_PREFIX + "3f2a-user"] == mine


def test_a_view_over_mlflows_limit_is_one_warning_line_and_not_written(tracking_uri: str, capsys) -> None:
    experiment_id = tracking.open_experiment(tracking_uri, "repro")
    capsys.readouterr()
    huge = SavedView(
        "huge", "Huge", {"selectedColumns": [f"metrics.`m{i}`" for i in range(MAX_VIEW_CHARS // 10)]}
    )
    assert write_views(MlflowClient(tracking_uri), experiment_id, {}, [huge]) is False
    err = capsys.readouterr().err
    assert err.startswith("warning: ") and err.count("\n") == 1, err
    assert "'Huge' is" in err and "over MLflow's 20,000" in err
    assert VIEW_TAG_PREFIX + "huge" not in MlflowClient(tracking_uri).get_experiment(experiment_id).tags


def test_a_read_only_store_is_one_warning_line(tracking_uri: str, capsys) -> None:
    experiment_id = tracking.open_experiment(tracking_uri, "repro")
    db_path = tracking_uri.removeprefix("sqlite:///")
    read_only = MlflowClient(f"sqlite:///file:{db_path}?mode=ro&uri=true")  # refuses writes, even as root
    assert read_only.get_experiment(experiment_id).name == "repro"
    capsys.readouterr()
    assert write_views(read_only, experiment_id, {}) is False  # as if the views were missing
    captured = capsys.readouterr()
    assert captured.err.startswith("warning: MLflow UI saved view 'Energy per image' could not be written")
    assert captured.err.count("\n") == 1 and "readonly database" in captured.err, captured.err
    assert "Traceback" not in captured.err + captured.out


def test_ui_url_and_the_summary_link_to_the_energy_view_only_where_it_exists(
    tracking_uri: str, capsys
) -> None:
    experiment_id = tracking.open_experiment(tracking_uri, "repro")
    capsys.readouterr()
    ui_url_main(["--uri", tracking_uri, "--port", "5002"])
    view_link = f"/#/experiments/{experiment_id}/runs?viewStateShareKey={ENERGY_VIEW_KEY}&workflowType="
    assert f"http://127.0.0.1:5002{view_link}" in capsys.readouterr().out
    assert ui_link("http://mlflow.example:5000/", experiment_id, {}) == (
        f"Open the runs in the MLflow UI: http://mlflow.example:5000/#/experiments/{experiment_id}/runs"
        "?workflowType=machine_learning"
    )  # no view: the plain runs page, not a link to a missing view
    tags = MlflowClient(tracking_uri).get_experiment(experiment_id).tags
    assert ui_link(tracking_uri, experiment_id, tags) == (
        f"Open the runs in the MLflow UI with `mlflow ui --backend-store-uri {tracking_uri}`: "
        f"http://127.0.0.1:5000{view_link}machine_learning"
    )
    assert "with `make ui`:" in ui_link("sqlite:///mlflow.db", experiment_id, tags)
