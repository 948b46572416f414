"""Recipe sweeps (docs/sweeps.md): points from the config, the winner chosen on the val split only, finished
points reused when a sweep grows, and the sweep's assets in Dagster."""

from __future__ import annotations

import json

import pytest

from finetune_pipeline.lib import stages
from finetune_pipeline.lib.config import ConfigError, load_config
from finetune_pipeline.lib.stages import sweep as sweep_stages
from finetune_pipeline.lib.sweeps import PointResult, select
from finetune_pipeline_tests.audit import OpenedFiles
from finetune_pipeline_tests.helpers import SAMPLE_RAW, write_config

# Two points that differ only in learning rate, on the suite's tiny model (4 steps each).
GRID = {"learning_rate": [0.005, 0.05]}


# --- config: points and their errors -------------------------------------------------------------------------

def test_grid_and_points_expand_to_stable_names(tmp_path):
    cfg = load_config(write_config(tmp_path, SAMPLE_RAW, sweep={
        "grid": {"learning_rate": [5e-4, 1e-3], "epochs": [2, 3]},
        "points": [{"lora": {"r": 4, "alpha": 8}, "general_mix_ratio": 0.1}, {"name": "wide", "lora": {"r": 32}}]}))
    points = {p.name: p for p in cfg.sweep_points()}
    # The grid's points, then the listed ones; a name is the settings sorted by name (the order keys are
    # written in changes no name).
    assert list(points) == ["ep2-lr0.0005", "ep2-lr0.001", "ep3-lr0.0005", "ep3-lr0.001", "mix0.1-alpha8-r4", "wide"]
    # Each point is the config's train section with its overrides, nothing else changed.
    assert (points["ep3-lr0.0005"].train.learning_rate, points["ep3-lr0.0005"].train.epochs) == (5e-4, 3)
    assert points["mix0.1-alpha8-r4"].train.lora.r == 4 and points["mix0.1-alpha8-r4"].train.general_mix_ratio == 0.1
    assert points["wide"].train.lora.r == 32 and points["wide"].train.lora.alpha == cfg.train.lora.alpha
    assert points["wide"].train.batch_size == cfg.train.batch_size
    # A grown sweep renames nothing: a name comes from the point's own settings.
    grown = load_config(write_config(tmp_path, SAMPLE_RAW, sweep={
        "grid": {"learning_rate": [5e-4, 1e-3, 2e-3], "epochs": [2, 3]}}))
    assert set(list(points)[:4]) <= {p.name for p in grown.sweep_points()}


@pytest.mark.parametrize("sweep, expected", [
    ({"points": [{"learning_rate": 1e-3}, {"lora": {"r": 0}}]},
     "sweep.points[1] (r0): train.lora.r: input should be greater than 0 (got an integer)"),
    ({"points": [{"name": "typo", "lora": {"rank": 8}}]}, "sweep.points[0] (typo): train.lora.rank is not a train setting"),
    ({"grid": {"epochs": ["2", 3]}}, "sweep.grid (ep2): train.epochs: input should be a valid number (got a string)"),
    ({"points": [{"runner": "k8s"}]}, "sweep.points[0] (runnerk8s): train.runner cannot be swept"),
    ({"points": [{"save_steps": 3}]}, "sweep.points[0] (save_steps3): train.save_steps (3) must be a positive "
                                      "multiple of train.eval_steps (2)"),
    ({"points": [{"learning_rate": 1e-3}, {"learning_rate": 1e-3, "name": "again"}]},
     "sweep.points[1] (again) trains exactly what sweep.points[0] (lr0.001) trains"),
    ({"grid": {"learning_rate": []}}, "sweep.grid has no values to try for ['learning_rate']"),
    ({"points": [{"epochs": 2}], "select_by": "test/exact_match"}, "sweep.select_by must be eval_loss or val/<metric>"),
])
def test_config_errors_are_one_line_naming_the_point_and_field(tmp_path, sweep, expected):
    path = write_config(tmp_path, SAMPLE_RAW, sweep=sweep)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert len(e.value.lines) == 1, e.value.lines
    assert e.value.lines[0].startswith(f"{path}: {expected}"), e.value.lines[0]


def test_sweep_command_refuses_a_config_without_sweep(tmp_path, capsys):
    from finetune_pipeline.cli.main import main

    assert main(["sweep", "--config", str(write_config(tmp_path, SAMPLE_RAW))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no sweep: section" in err[0]


# --- selection ------------------------------------------------------------------------------------------------

def _result(name: str, **validation) -> PointResult:
    return PointResult(name=name, settings={}, version=f"lora-{name}", adapter=name, validation=validation)


def test_selection_follows_the_metric_direction_and_breaks_ties_by_declaration_order():
    results = [_result("a", eval_loss=1.2, **{"val/exact_match": 0.5}),
               _result("b", eval_loss=0.9, **{"val/exact_match": 0.5}),
               _result("c", eval_loss=1.5, **{"val/exact_match": 0.25})]
    assert select(results, "eval_loss", lower_is_better=True).ranking == ["b", "a", "c"]
    by_accuracy = select(results, "val/exact_match", lower_is_better=False)
    assert by_accuracy.ranking == ["a", "b", "c"] and by_accuracy.winner_version == "lora-a"


def test_selection_refuses_a_point_without_a_validation_value():
    with pytest.raises(ValueError, match=r"no value for point\(s\) \['b'\].*val_fraction"):
        select([_result("a", eval_loss=1.0), _result("b", eval_loss=None)], "eval_loss", lower_is_better=True)


# --- the core, with real trainings of the tiny model ---------------------------------------------------------

class CountingLaunch:
    """launch_subprocess, counting the trainings and keeping the spec files they were given."""

    def __init__(self):
        self.specs: list[dict] = []

    def __call__(self, spec_path):
        self.specs.append(json.loads(spec_path.read_text()))
        return stages.launch_subprocess(spec_path)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A 2-point sweep trained once for the module: its config folder, inputs, launches and results."""
    root = tmp_path_factory.mktemp("sweep")
    cfg = load_config(write_config(root, SAMPLE_RAW, sweep={"grid": GRID}))
    raw, base = stages.raw_examples(cfg), stages.base_model(cfg)
    dataset = stages.training_dataset(cfg, raw, base)
    launch = CountingLaunch()
    with OpenedFiles() as opened:
        points, winner = sweep_stages.run_sweep(cfg, base, dataset, launch)
        opened = list(opened)
    return root, cfg, base, dataset, launch, points, winner, opened


@pytest.mark.slow
def test_the_winner_is_chosen_on_the_val_split_and_the_test_split_is_never_read(swept):
    _, cfg, _, dataset, launch, points, winner, opened = swept
    test_file = str((dataset.dir / "test.jsonl").resolve())
    # Nothing this process opened during the sweep was a test split (the dataset's or the eval set's) ...
    assert opened and not [p for p in opened if p.endswith("/test.jsonl")]
    # ... and each training child was given the train and val files only.
    assert len(launch.specs) == 2
    for spec in launch.specs:
        assert spec["val_file"].endswith("/val.jsonl") and test_file not in json.dumps(spec)
    # The winner is the point whose adapter has the lowest best eval loss on the val split.
    losses = {name: adapter.info["eval_loss"] for name, adapter, _ in points}
    assert len(set(losses.values())) == 2, losses  # the two learning rates must give different losses
    assert winner.info["winner"] == min(losses, key=losses.get)
    assert winner.info["select_by"] == "eval_loss"
    selection = sweep_stages.load_selection(winner)
    assert [p.validation["eval_loss"] for p in selection.points] == [losses[n] for n, _, _ in points]
    # The winner's lineage names each point's record, which names its adapter and model version.
    inputs = {i["key"] for i in winner.lineage()["inputs"]}
    assert inputs == {record.key for _, _, record in points}
    # Every point is a registered model version.
    assert {record.info["version"] for _, _, record in points} <= set(stages.registry(cfg).keys())
    # The winner's version carries how it was chosen (the leaderboard shows it); the loser's does not.
    chosen = winner.info["winner_version"]
    assert sweep_stages.chosen_by(cfg, chosen).startswith("sweep winner of 2 points by eval_loss = ")
    assert [sweep_stages.chosen_by(cfg, r.info["version"]) for _, _, r in points if r.info["version"] != chosen] \
        == [None]


def test_the_leaderboard_marks_the_metric_that_chose_a_sweep_winner():
    from finetune_pipeline.lib.versions.leaderboard import Leaderboard, LeaderboardRow

    rows = [LeaderboardRow(version=v, kind="lora_merged", metrics={"exact_match": m, "n": 10}, eval_key="k",
                           eval_path="p", chosen_by=c)
            for v, m, c in (("lora-a", 0.5, "sweep winner of 3 points by val/classification/accuracy = 0.79 on the "
                                            "val split"), ("lora-b", 0.4, None))]
    table = Leaderboard.ranked("e", 10, "exact_match", rows, {}, {}).markdown()
    assert "| lora-a | lora_merged (sweep winner of 3 points by val/classification/accuracy = 0.79 on the val split) |" \
        in table
    assert "| lora-b | lora_merged |" in table


@pytest.mark.slow
def test_selecting_by_a_val_metric_evaluates_on_the_val_split_only(swept):
    _, cfg, base, dataset, launch, *_ = swept
    by_val = cfg.model_copy(update={"sweep": cfg.sweep.model_copy(update={"select_by": "val/valid_json",
                                                                         "val_rows": 4})})
    with OpenedFiles() as opened:
        points, winner = sweep_stages.run_sweep(by_val, base, dataset, launch)
        opened = list(opened)
    assert len(launch.specs) == 2  # the adapters were reused: no training
    assert not [p for p in opened if p.endswith("/test.jsonl")]
    assert str((dataset.dir / "val.jsonl").resolve()) in opened
    values = {name: record.info["validation"]["val/valid_json"] for name, _, record in points}
    best = max(values.values())
    assert winner.info["winner"] == next(n for n, v in values.items() if v == best)  # first declared on a tie


@pytest.mark.slow
def test_a_grown_sweep_trains_only_the_new_point(swept):
    root, _, base, dataset, launch, *_ = swept
    before = len(launch.specs)
    grown = load_config(write_config(root, SAMPLE_RAW, sweep={"grid": {"learning_rate": [*GRID["learning_rate"], 0.02]}}))
    points, winner = sweep_stages.run_sweep(grown, base, dataset, launch)
    assert len(launch.specs) == before + 1  # one training: the new point
    assert [adapter.cache_hit for _, adapter, _ in points] == [True, True, False]
    assert launch.specs[-1]["train"]["learning_rate"] == 0.02
    assert len(winner.info["points"]) == 3


# --- Dagster ---------------------------------------------------------------------------------------------------

# `instance`: a Definitions resolved here needs a live instance; an earlier test's ephemeral one may be gone.
def test_sweep_assets_are_partitioned_by_point_in_the_gpu_pool_apart_from_train_and_merge(tmp_path, instance):
    import dagster as dg

    from finetune_pipeline.definitions import build_definitions, defs

    # Without a sweep: section the graph has no sweep assets: "Materialize all" stays one click (one partitioning).
    assert not {"sweep_adapter", "sweep_model", "sweep_winner"} & {
        k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    defs = build_definitions(load_config(write_config(tmp_path, SAMPLE_RAW, sweep={"grid": GRID})))
    graph = defs.resolve_asset_graph()
    node = {name: graph.get(dg.AssetKey(name)) for name in ("sweep_adapter", "sweep_model", "sweep_winner")}
    assert {n.group_name for n in node.values()} == {"sweep"}  # not in train_and_merge (groups data, training)
    assert node["sweep_adapter"].pools == {"gpu"} and node["sweep_model"].pools == {"gpu"}
    points = node["sweep_adapter"].partitions_def
    assert isinstance(points, dg.DynamicPartitionsDefinition) and points.name == "sweep_points"
    assert node["sweep_model"].partitions_def == points and node["sweep_winner"].partitions_def is None
    assert node["sweep_adapter"].backfill_policy == dg.BackfillPolicy.multi_run(max_partitions_per_run=1)
    parents = {name: sorted(k.to_user_string() for k in n.parent_keys) for name, n in node.items()}
    assert parents == {"sweep_adapter": ["base_model", "training_dataset"],
                       "sweep_model": ["base_model", "sweep_adapter", "training_dataset"],
                       "sweep_winner": ["base_model", "sweep_model", "training_dataset"]}
    selected = defs.resolve_job_def("train_and_merge").asset_layer.executable_asset_keys
    assert not {k.to_user_string() for k in selected} & set(node)


@pytest.mark.slow
def test_sweep_command_materializes_each_point_and_the_winner_in_dagster(tmp_path, instance, capsys):
    """`finetune-pipeline sweep` on a 2-point sweep in a temporary instance: a run per point, the winner's version
    added to model_versions (and evaluated on test), the losers registered but not added."""
    from finetune_pipeline.cli.main import main
    from finetune_pipeline.defs.training import MODEL_VERSIONS
    from finetune_pipeline_tests.helpers import latest_materialization

    config = write_config(tmp_path, SAMPLE_RAW, sweep={"grid": GRID})
    assert main(["sweep", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    names = [p.name for p in load_config(config).sweep_points()]
    for i, name in enumerate(names, start=1):  # progress per point: name, settings, seconds, val metric
        assert f"[{i}/2] {name}: learning_rate=" in out
        assert f"[{i}/2] {name}: trained, train " in out and "eval_loss" in out
    winner = next(line for line in out.splitlines() if line.startswith("winner: "))
    assert "chosen by eval_loss on the val split" in winner
    records = {name: latest_materialization(instance, "sweep_model", name) for name in names}
    assert all(records.values())
    losses = {name: m.metadata["eval_loss"].value for name, m in records.items()}
    best = min(losses, key=losses.get)
    assert winner.startswith(f"winner: {best} ")
    versions = {name: m.metadata["version_key"].value for name, m in records.items()}
    added = set(instance.get_dynamic_partitions(MODEL_VERSIONS.name))
    assert versions[best] in added and not {v for n, v in versions.items() if n != best} & added
    assert latest_materialization(instance, "model_eval", versions[best]) is not None
    chosen = latest_materialization(instance, "sweep_winner")
    assert chosen.metadata["winner"].value == best
    assert chosen.metadata["select_by"].value == "eval_loss on the val split"
