from __future__ import annotations

from pathlib import Path

import pytest

from conveyor.config import find_project_root, load_spec, render_template
from conveyor.data.settings import dataset_spec
from conveyor.errors import ConfigError, ProjectNotFoundError
from conveyor.project import init_project


def _write(root: Path, text: str) -> Path:
    (root / "conveyor.yaml").write_text(text, encoding="utf-8")
    return root


def test_template_loads_with_documented_defaults(tmp_path: Path) -> None:
    _write(tmp_path, render_template("fraud"))
    spec = load_spec(tmp_path, env={})
    assert spec.project == "fraud"
    assert spec.backends.store.scheme == "sqlite"
    assert spec.slos.quality is not None
    assert (spec.slos.quality.metric, spec.slos.quality.floor) == ("roc_auc", 0.85)
    assert spec.slos.quality.met_by(0.9) and not spec.slos.quality.met_by(0.8)
    assert spec.slos.latency_p95_ms == 50


def test_relative_paths_resolve_against_the_project_not_the_cwd(
    tmp_path: Path, monkeypatch
) -> None:
    _write(tmp_path, "project: p\n")
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)
    spec = load_spec(env={})
    assert spec.root == tmp_path.resolve()
    assert spec.url("store").location == str(tmp_path.resolve() / ".conveyor" / "conveyor.db")
    assert spec.url("artifacts").location == str(tmp_path.resolve() / ".conveyor" / "artifacts")


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    _write(tmp_path, "project: p\nbackends:\n  store: sqlite:///x.db\n")
    spec = load_spec(
        tmp_path,
        env={
            "CONVEYOR_STORE": "postgresql://app:pw@db:5432/c",
            "CONVEYOR_CACHE": "redis://127.0.0.1:6379/1",
        },
    )
    assert spec.backends.store.host == "db"
    assert spec.backends.cache.scheme == "redis"
    assert "pw" not in repr(spec) and "pw" not in str(spec.model_dump())


def test_bad_value_names_file_line_field_and_expectation(tmp_path: Path) -> None:
    _write(tmp_path, "project: p\nslos:\n  quality:\n    metric: auc\n    floor: high\n")
    with pytest.raises(ConfigError) as info:
        load_spec(tmp_path, env={})
    message = str(info.value)
    assert f"{tmp_path / 'conveyor.yaml'}:5" in message
    assert "slos.quality.floor" in message
    assert "valid number" in message and "'high'" in message


def test_unknown_field_lists_the_expected_ones(tmp_path: Path) -> None:
    _write(tmp_path, "project: p\nbackends:\n  stor: sqlite:///x.db\n")
    with pytest.raises(ConfigError) as info:
        load_spec(tmp_path, env={})
    message = str(info.value)
    assert ":3: backends.stor: unknown field" in message
    assert "store, artifacts, events, cache, ratelimit" in message


def test_unknown_scheme_in_spec_lists_known_ones(tmp_path: Path) -> None:
    _write(tmp_path, "project: p\nbackends:\n  events: kafka://broker:9092\n")
    with pytest.raises(
        ConfigError, match=r"backends.events: no events backend for scheme 'kafka'.*sqlite://"
    ):
        load_spec(tmp_path, env={})


def test_bad_env_override_names_the_variable(tmp_path: Path) -> None:
    _write(tmp_path, "project: p\n")
    with pytest.raises(ConfigError, match=r"\$CONVEYOR_STORE: backends.store: .*mongodb"):
        load_spec(tmp_path, env={"CONVEYOR_STORE": "mongodb://x"})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("project: [unclosed\n", "not valid YAML"),
        ("- a\n- b\n", "expected a mapping"),
        ("backends: {}\n", "project: required field is missing"),
        ("project: 'has space'\n", "should match pattern"),
        ("project: p\nslos:\n  availability: 1.5\n", "slos.availability"),
        (
            "project: p\nslos:\n  quality: {metric: auc, floor: 0.8, direction: up}\n",
            "'maximize' or 'minimize'",
        ),
    ],
)
def test_malformed_specs(tmp_path: Path, text: str, expected: str) -> None:
    _write(tmp_path, text)
    with pytest.raises(ConfigError, match=expected):
        load_spec(tmp_path, env={})


def test_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "conveyor.yaml").write_bytes("project: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_spec(tmp_path, env={})


def test_project_found_by_walking_up(tmp_path: Path) -> None:
    (tmp_path / ".conveyor").mkdir()
    deep = tmp_path / "src" / "pkg"
    deep.mkdir(parents=True)
    assert find_project_root(deep) == tmp_path.resolve()
    spec = load_spec(deep, env={})  # no conveyor.yaml: defaults, named after the folder
    assert spec.project == tmp_path.name


def test_no_project_anywhere(tmp_path: Path) -> None:
    with pytest.raises(ProjectNotFoundError, match="conveyor init"):
        find_project_root(tmp_path)


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    spec_path = init_project(tmp_path, name="demo")
    assert (tmp_path / ".conveyor" / ".gitignore").is_file()
    assert "project: demo" in spec_path.read_text()
    from conveyor.errors import AlreadyExistsError

    with pytest.raises(AlreadyExistsError, match="--force"):
        init_project(tmp_path)
    init_project(tmp_path, name="again", force=True)
    assert load_spec(tmp_path, env={}).project == "again"


def test_datasets_section(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "project: p\ndatasets:\n  tx:\n    source: {kind: csv, path: data/tx.csv}\n"
        "    expectations:\n      - {kind: not_null, column: amount}\n"
        "    sensitive: [email]\n    subject_keys: [customer_id]\n",
    )
    spec = load_spec(tmp_path, env={})
    tx = dataset_spec(spec, "tx")
    assert tx.on_failure == "quarantine"
    assert tx.source == {"kind": "csv", "path": "data/tx.csv"}
    assert tx.sensitive == ["email"]
    assert spec.where("datasets.tx.expectations[0]").endswith("conveyor.yaml:6")
    from conveyor.errors import NotFoundError

    with pytest.raises(NotFoundError, match=r"no data set 'nope'.*: tx\)"):
        dataset_spec(spec, "nope")


def test_unknown_dataset_field_lists_the_expected_ones(tmp_path: Path) -> None:
    _write(tmp_path, "project: p\ndatasets:\n  tx:\n    on_fail: warn\n")
    with pytest.raises(
        ConfigError,
        match=r":4: datasets.tx.on_fail: unknown field; expected one of: "
        r"description, source, expectations, (.*, )?on_failure",
    ):
        load_spec(tmp_path, env={})


def test_every_field_can_be_set_from_the_environment(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "project: p\nmodels:\n  Fraud:\n    train: m:fit\n    dataset: tx\n"
        "    features: [a]\n    target: y\n",
    )
    spec = load_spec(
        tmp_path,
        env={
            "CONVEYOR_SERVING__PORT": "9001",
            "CONVEYOR_SERVING__AUTH": "disabled",
            "CONVEYOR_SERVING__BATCHING__MAX_WAIT_MS": "0.5",
            "CONVEYOR_BACKENDS__RATELIMIT": "redis://127.0.0.1:6379/3",
            "CONVEYOR_MODELS__FRAUD__AUTO_PROMOTE": "true",
            "CONVEYOR_MODELS__FRAUD__FEATURES": '["a", "b"]',
            "CONVEYOR_SLOS__LATENCY_P95_MS": "20",
            "CONVEYOR_API_KEY": "not a spec field: no '__' and no seam of that name",
        },
    )
    serving = spec.section("serving")
    assert (serving.port, serving.auth, serving.batching.max_wait_ms) == (9001, "disabled", 0.5)
    assert spec.url("ratelimit").render() == "redis://127.0.0.1:6379/3"
    fraud = spec.section("models")["Fraud"]  # the key is matched whatever its case
    assert fraud.auto_promote is True and fraud.features == ["a", "b"]
    assert spec.slos.latency_p95_ms == 20


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"CONVEYOR_SERVNG__PORT": "1"}, r"\$CONVEYOR_SERVNG__PORT: servng: unknown field"),
        (
            {"CONVEYOR_SERVING__PORT": "eighty"},
            r"\$CONVEYOR_SERVING__PORT: serving.port: .*integer",
        ),
        ({"CONVEYOR_SERVING____PORT": "1"}, r"\$CONVEYOR_SERVING____PORT: an empty field name"),
        ({"CONVEYOR_MODELS__X__FEATURES": "[a"}, r"\$CONVEYOR_MODELS__X__FEATURES: not valid JSON"),
        ({"CONVEYOR_RATELIMIT": "nats://x"}, r"\$CONVEYOR_RATELIMIT: backends.ratelimit: .*memory"),
    ],
)
def test_a_bad_environment_override_names_the_variable(
    tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    _write(tmp_path, "project: p\n")
    with pytest.raises(ConfigError, match=expected):
        load_spec(tmp_path, env=env)


def test_fields_of_earlier_versions(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # conveyor init used to write backends.online: the feature store reads it again.
    _write(tmp_path, "project: p\nbackends:\n  online: sqlite:///.conveyor/online.db\n")
    with caplog.at_level("WARNING", logger="conveyor.config"):
        spec = load_spec(tmp_path, env={})
    assert str(spec.backends.online) == "sqlite:///.conveyor/online.db"
    assert "is ignored" not in caplog.text
    # The rate limiter moved to a seam: the old field says where.
    _write(tmp_path, "project: p\nserving:\n  rate_limiter: redis://h:6379/0\n")
    with pytest.raises(ConfigError, match=r":3: serving.rate_limiter: .*backends.ratelimit"):
        load_spec(tmp_path, env={})


def test_a_section_no_capability_declares_is_refused(tmp_path: Path) -> None:
    _write(tmp_path, "project: p\nmonitors: {}\n")
    with pytest.raises(ConfigError, match=r"monitors: unknown field; expected one of: .*serving"):
        load_spec(tmp_path, env={})
    spec = load_spec(_write(tmp_path, "project: p\n"), env={})
    with pytest.raises(ConfigError, match=r"no section 'monitors'.*sections: .*datasets"):
        spec.section("monitors")


def test_an_unknown_expectation_kind_names_file_line_and_field(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "project: p\n"
        "datasets:\n"
        "  tx:\n"
        "    expectations:\n"
        "      - kind: not_null\n"
        "        column: id\n"
        "      - column: amount\n"
        "        kind: betwen\n"
        "        min: 0\n"
        "      - {column: id}\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_spec(tmp_path, env={})
    lines = str(caught.value).splitlines()
    spec_file = tmp_path / "conveyor.yaml"
    # Each problem with its place, as every other spec error: the line of the kind itself.
    assert lines[1] == (
        f"  {spec_file}:8: datasets.tx.expectations.1.kind: unknown kind 'betwen'; "
        "known: schema, row_count, freshness, not_null, between, in_set, matches_regex, "
        "unique, custom"
    )
    assert lines[2].startswith(f"  {spec_file}:10: datasets.tx.expectations.2.kind: no kind;")


def test_an_unknown_expectation_kind_from_the_environment_names_the_variable(
    tmp_path: Path,
) -> None:
    _write(tmp_path, "project: p\ndatasets:\n  tx: {}\n")
    env = {"CONVEYOR_DATASETS__TX__EXPECTATIONS": '[{"kind": "nul", "column": "id"}]'}
    with pytest.raises(ConfigError, match=r"\$CONVEYOR_DATASETS__TX__EXPECTATIONS: .*'nul'"):
        load_spec(tmp_path, env=env)
    ok = {"CONVEYOR_DATASETS__TX__EXPECTATIONS": '[{"kind": "not_null", "column": "id"}]'}
    assert dataset_spec(load_spec(tmp_path, env=ok), "tx").expectations == [
        {"kind": "not_null", "column": "id"}
    ]
