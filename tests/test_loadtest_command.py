"""Locust command lines and generated locustfiles, checked by running Locust for real."""

from __future__ import annotations

import pytest

from perfruns.loadtest import (
    LoadShape,
    check_locustfile,
    iter_history,
    locust_plan,
    read_final,
    steps_from_history,
)

from .test_loadtest_support import (
    LOCUST,
    LOCUSTFILE,
    console,
    run_plan,
    target_server,
    write_locustfile,
)


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_a_constant_load_runs_headless_with_its_users_rate_and_time(tmp_path):
    locustfile = write_locustfile(tmp_path)
    shape = LoadShape(kind="constant", users=25, spawn_rate=5, duration_s=90)

    plan = locust_plan(
        locust="/opt/locust",
        locustfile=locustfile,
        host="http://127.0.0.1:8000",
        shape=shape,
        workdir=tmp_path / "run",
    )

    argv = plan.master
    assert argv[0] == "/opt/locust"
    assert option(argv, "-f") == str(locustfile)
    assert (option(argv, "-u"), option(argv, "-r"), option(argv, "-t")) == ("25", "5", "90s")
    assert option(argv, "--host") == "http://127.0.0.1:8000"
    for flag in ("--headless", "--csv-full-history", "--only-summary"):
        assert flag in argv
    assert option(argv, "--csv") == str(plan.csv_prefix)
    # Locust appends ".json" to the name it is given.
    assert option(argv, "--json-file") + ".json" == str(plan.json_file)
    assert option(argv, "--html") == str(plan.html_file)
    assert option(argv, "--logfile") == str(plan.log_file)
    assert plan.history_file.name == "locust_stats_history.csv"
    assert plan.failures_file.name == "locust_failures.csv"
    assert plan.stats_file.name == "locust_stats.csv"
    assert int(option(argv, "--stop-timeout")) >= 1
    assert plan.expected_duration_s == 90 + int(option(argv, "--stop-timeout"))
    assert plan.workers == [] and "--master" not in argv


@pytest.mark.parametrize(
    ("shape", "sentence"),
    [
        (LoadShape(kind="ramp"), "the load shape must be constant, steps or arrival"),
        (LoadShape(kind="constant", users=0), "the load needs at least 1 user"),
        (LoadShape(kind="constant", duration_s=0), "the duration must be at least 1 second"),
        (LoadShape(kind="constant", spawn_rate=0), "the spawn rate must be above 0"),
        (
            LoadShape(kind="steps", step_size=0, step_duration_s=10, step_max=50),
            "steps need a step size of at least 1",
        ),
        (
            LoadShape(kind="steps", step_size=10, step_duration_s=0, step_max=50),
            "each step must last at least 1 second",
        ),
        (
            LoadShape(kind="steps", step_start=20, step_size=10, step_duration_s=5, step_max=10),
            "the step maximum must be at least the first step's 20 users",
        ),
        (LoadShape(kind="arrival", arrival_rps=0), "a fixed arrival rate must be above 0"),
    ],
)
def test_a_shape_names_each_bad_field(shape, sentence, tmp_path):
    errors = shape.validate()

    assert any(error.startswith(sentence) for error in errors), errors
    with pytest.raises(ValueError, match=sentence.split("'")[0]):
        locust_plan(
            locust=LOCUST,
            locustfile=tmp_path / "x.py",
            host="http://127.0.0.1:1",
            shape=shape,
            workdir=tmp_path,
        )


def test_a_path_with_a_comma_is_refused_as_locust_splits_on_commas(tmp_path):
    with pytest.raises(ValueError, match="commas"):
        locust_plan(
            locust=LOCUST,
            locustfile=tmp_path / "a,b.py",
            host="http://127.0.0.1:1",
            shape=LoadShape(kind="constant"),
            workdir=tmp_path,
        )


def test_good_shapes_have_no_errors():
    assert LoadShape(kind="constant").validate() == []
    assert LoadShape(kind="arrival", arrival_rps=50).validate() == []
    assert LoadShape(kind="steps", step_size=10, step_duration_s=30, step_max=100).validate() == []


def test_steps_go_from_the_start_by_the_size_and_end_at_the_maximum():
    def levels(start, size, top):
        return LoadShape(
            kind="steps", step_start=start, step_size=size, step_duration_s=1, step_max=top
        ).step_levels()

    assert levels(0, 10, 50) == [10, 20, 30, 40, 50]
    assert levels(5, 10, 30) == [5, 15, 25, 30]
    assert levels(7, 10, 7) == [7]


OWN_SHAPE = """

from locust import LoadTestShape


class SevenForAMinute(LoadTestShape):
    def tick(self):
        return (7, 10) if self.get_run_time() < 60 else None
"""


def test_a_step_load_raises_the_users_step_by_step_through_a_generated_shape(tmp_path):
    # The locustfile's own shape must not take over from the steps asked for.
    locustfile = write_locustfile(tmp_path, LOCUSTFILE + OWN_SHAPE)
    shape = LoadShape(
        kind="steps", step_start=1, step_size=1, step_max=3, step_duration_s=2, spawn_rate=10
    )
    with target_server() as url:
        plan = locust_plan(
            locust=LOCUST,
            locustfile=locustfile,
            host=url,
            shape=shape,
            workdir=tmp_path / "run",
            stop_timeout_s=1,
        )
        code = run_plan(plan)

    assert code == 0, console(plan)
    assert option(plan.master, "-f").split(",") == [
        str(tmp_path / "run" / "fixproof_step_shape.py"),
        str(locustfile),
    ]
    shape_source = (tmp_path / "run" / "fixproof_step_shape.py").read_text()
    assert "LEVELS = [1, 2, 3]" in shape_source and "STEP_SECONDS = 2.0" in shape_source
    assert "-u" not in plan.master and "-t" not in plan.master
    assert plan.expected_duration_s == 3 * 2 + 1
    # Locust ran the shape (it stops the test itself when the shape is done) ...
    assert "Shape test completed" in plan.log_file.read_text()
    # ... and the history shows the users going up a step at a time.
    users = [row.users for row in iter_history(plan.history_file) if row.name == "Aggregated"]
    seen = [count for i, count in enumerate(users) if count and count not in users[:i]]
    assert seen == sorted(seen) and seen[-1] == 3 and set(seen) <= {1, 2, 3}
    steps = steps_from_history(iter_history(plan.history_file))
    assert [step.users for step in steps] == seen
    assert read_final(plan.json_file)[-1].requests > 0


def test_a_fixed_arrival_rate_paces_every_user_class_of_the_locustfile(tmp_path):
    # Unpaced, the locustfile's 2 users would make about 40 requests a second.
    locustfile = write_locustfile(tmp_path)
    shape = LoadShape(kind="arrival", users=2, spawn_rate=2, duration_s=4, arrival_rps=5)
    with target_server() as url:
        plan = locust_plan(
            locust=LOCUST,
            locustfile=locustfile,
            host=url,
            shape=shape,
            workdir=tmp_path / "run",
            stop_timeout_s=1,
        )
        code = run_plan(plan)

    assert code == 0, console(plan)
    wrapper = tmp_path / "run" / "fixproof_arrival.py"
    assert option(plan.master, "-f") == str(wrapper)
    source = wrapper.read_text()
    assert repr(str(locustfile)) in source and "PER_USER_RATE = 2.5" in source
    assert (option(plan.master, "-u"), option(plan.master, "-t")) == ("2", "4s")
    total = read_final(plan.json_file)[-1]
    assert {r.name for r in read_final(plan.json_file)} == {"/ok", "/flaky", "Aggregated"}
    # Paced at 5 task iterations a second; a slow machine only makes fewer.
    assert 0 < total.requests <= 5 * (4 + 2)


def test_a_distributed_run_with_one_worker_produces_results(tmp_path):
    locustfile = write_locustfile(tmp_path)
    shape = LoadShape(kind="constant", users=2, spawn_rate=2, duration_s=3)
    with target_server() as url:
        plan = locust_plan(
            locust=LOCUST,
            locustfile=locustfile,
            host=url,
            shape=shape,
            workdir=tmp_path / "run",
            workers=1,
            stop_timeout_s=1,
        )
        code = run_plan(plan)

    assert code == 0, console(plan)
    assert "--master" in plan.master and option(plan.master, "--expect-workers") == "1"
    [worker] = plan.workers
    assert "--worker" in worker
    assert option(worker, "--master-port") == option(plan.master, "--master-bind-port")
    assert option(worker, "-f") == option(plan.master, "-f")
    results = {r.name: r for r in read_final(plan.json_file)}
    assert results["/ok"].requests > 0 and results["/flaky"].failures > 0
    assert results["Aggregated"].requests == results["/ok"].requests + results["/flaky"].requests
    assert "1 workers connected" in plan.log_file.read_text()
    [worker_log] = plan.worker_log_files
    assert "Got quit message from master" in worker_log.read_text()


def test_a_valid_locustfile_passes_the_check(tmp_path):
    assert check_locustfile(LOCUST, write_locustfile(tmp_path)) is None


def test_a_locustfile_with_a_syntax_error_is_reported_with_its_line(tmp_path):
    broken = write_locustfile(
        tmp_path,
        "from locust import HttpUser, task\n\n\nclass Visitor(HttpUser):\n"
        "    @task\n    def home(self):\n        self.client.get('/'\n",
        name="broken.py",
    )

    message = check_locustfile(LOCUST, broken)

    assert message is not None and "\n" not in message
    assert message.startswith("broken.py line 7: SyntaxError:"), message


def test_a_locustfile_importing_a_missing_module_names_it(tmp_path):
    broken = write_locustfile(tmp_path, "import not_installed_anywhere\n", name="imports.py")

    message = check_locustfile(LOCUST, broken)

    assert message is not None
    assert message.startswith("imports.py line 1: ModuleNotFoundError"), message
    assert "not_installed_anywhere" in message


def test_a_locustfile_without_a_user_class_is_reported(tmp_path):
    empty = write_locustfile(tmp_path, "from locust import HttpUser\n", name="empty.py")

    assert check_locustfile(LOCUST, empty) == "empty.py defines no Locust User class"


def test_a_missing_locustfile_is_reported(tmp_path):
    message = check_locustfile(LOCUST, tmp_path / "absent.py")

    assert message is not None and "absent.py" in message
