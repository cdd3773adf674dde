"""The command line as a new user runs it: in this process through cli.main, and through new interpreters where
what is checked needs one (what gets imported, how the program exits, several processes at once)."""

import json
from pathlib import Path

import pytest

from conftest import run_dirs, run_main, run_nnrun, run_python, summary_count


def test_help_shows_the_first_command(capsys):
    code, out, err = run_main(["--help"], capsys)
    assert code == 0, err
    assert "nnrun train +exp=xor_relu" in out


def test_train_help_lists_groups(tmp_path, nnrun_here):
    code, out, err = nnrun_here(["train", "--help"])
    assert code == 0, err
    assert "optimizer: adadelta, adagrad, adam, momentum, rmsprop, sgd" in out
    assert "exp_name: default" in out


def test_train_help_of_a_sweep_shows_the_config_its_values_are_set_on(tmp_path, nnrun_here):
    code, out, err = nnrun_here(["train", "-m", "seed=0,1", "optimizer=sgd", "--help"])
    assert code == 0 and "Traceback" not in err, err
    assert out.startswith("nnrun train: ") and "\n  name: sgd\n" in out and "\nseed: 0\n" in out


@pytest.mark.parametrize("args,flags,overrides", [
    (["--info", "defaults"], {"--info": "defaults"}, []),
    (["-i", "searchpath", "seed=1"], {"--info": "searchpath"}, ["seed=1"]),
    (["--info=config", "seed=1"], {"--info": "config"}, ["seed=1"]),
    (["--info", "seed=1"], {"--info": None}, ["seed=1"]),
    (["--cfg", "hydra", "-p", "hydra.run", "seed=1"], {"--cfg": "hydra", "--package": "hydra.run"}, ["seed=1"]),
    (["-c", "job", "-p", "seed", "--cfg=job", "--package", "seed"], {"--cfg": "job", "--package": "seed"}, [])])
def test_hydras_flags_take_their_values(args, flags, overrides):
    from nnrun.preflight import split_args

    assert split_args(args) == (flags, overrides)


@pytest.mark.parametrize("args,flag", [(["-sc", "--resolve", "install=bash"], "-sc"), (["--cfg", "-m"], "--cfg"),
                                       (["train.epochs=2", "-p"], "-p")])
def test_a_flag_without_its_value_is_one_line(args, flag, capsys):
    code, _, err = run_main(["train", *args], capsys)
    assert code == 2 and err.splitlines() == [f"nnrun: error: {flag} needs a value (see nnrun train --hydra-help)"]


@pytest.mark.slow
def test_hydras_info_prints_what_its_choice_names(tmp_path):
    """In a new interpreter: Hydra's --info sets up logging on the streams of the process it runs in."""
    shown = run_nnrun(["train", "--info", "defaults"], cwd=tmp_path)
    assert shown.returncode == 0 and "Defaults List" in shown.stdout, shown.stderr
    assert not (tmp_path / "experiments").exists()


@pytest.mark.slow
def test_help_bad_input_and_printing_the_config_import_no_torch(tmp_path):
    """Help, bad input and --cfg stay instant: none imports torch (a fresh interpreter, as this one has)."""
    program = ("import sys\nfrom nnrun.cli import main\n"
               "for argv, code in ((['--help'], 0), (['train', '--help'], 0), (['train', 'seed=x'], 2),\n"
               "                   (['train', '--cfg', 'job'], 0)):\n"
               "    try:\n        got = main(argv)\n    except SystemExit as exc:\n        got = exc.code\n"
               "    assert got == code, (argv, got)\n"
               "    assert 'torch' not in sys.modules, f'{argv} imported torch'\n")
    out = run_python(program, tmp_path)
    assert out.returncode == 0, out.stderr


@pytest.mark.slow
def test_torch_is_imported_once_out_of_the_garbage_collectors_reach():
    """Before a run, torch is imported with the collector paused and then frozen: collections in a sweep no
    longer walk its objects; the collector is on again, and garbage made before it was freed, not frozen."""
    program = ("import gc, sys, weakref\n"
               "from nnrun import cli\n"
               "class Cycle: pass\n"
               "a = Cycle(); a.self = a; garbage = weakref.ref(a); del a\n"
               "cli.import_torch()\n"
               "assert 'torch' in sys.modules and gc.isenabled()\n"
               "frozen = gc.get_freeze_count()\n"
               "assert frozen > 100_000, frozen\n"
               "assert garbage() is None\n"
               "cli.import_torch()\n"
               "assert gc.get_freeze_count() == frozen\n")
    out = run_python(program, Path.cwd())
    assert out.returncode == 0, out.stderr


@pytest.mark.slow
@pytest.mark.parametrize("argv,code", [(["--help"], 0), (["tran"], 2), (["train", "seed=x"], 2)])
def test_the_program_exits_with_the_commands_code_after_the_exit_handlers(argv, code, tmp_path):
    """`nnrun` skips the interpreter's teardown (a second after torch), not its exit steps: atexit handlers
    (logging's close of the job logs among them) run, buffered output is flushed, the code is the command's."""
    program = ("import atexit, logging, sys\n"
               "from nnrun import cli\n"
               "log = logging.getLogger('job'); log.addHandler(logging.FileHandler('job.log', delay=False))\n"
               "log.setLevel(logging.INFO); log.info('written before exit')\n"
               "atexit.register(lambda: print('exit handler ran'))\n"
               f"sys.argv = ['nnrun', *{argv!r}]\n"
               "print('buffered', end='')\n"
               "cli.run()\n"
               "print('never here')\n")
    out = run_python(program, tmp_path)
    assert out.returncode == code, out.stderr
    assert out.stdout.startswith("buffered") and "exit handler ran" in out.stdout and "never here" not in out.stdout
    assert (tmp_path / "job.log").read_text() == "written before exit\n"


@pytest.mark.slow
def test_the_program_leaves_running_threads_to_the_interpreters_own_shutdown(tmp_path):
    """A thread still working when the command returns (joblib's, submitit's) is waited for, as Python does."""
    program = ("import threading, time\n"
               "from nnrun import cli\n"
               "def work():\n    time.sleep(0.5)\n    open('done', 'w').write('finished')\n"
               "threading.Thread(target=work).start()\n"
               "import sys; sys.argv = ['nnrun', '--version']\n"
               "cli.run()\n")
    out = run_python(program, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("nnrun ") and (tmp_path / "done").read_text() == "finished"


@pytest.mark.slow
def test_xor_relu_end_to_end(tmp_path):
    out = run_nnrun(["train", "+exp=xor_relu"], tmp_path)
    assert out.returncode == 0, out.stderr
    (run_dir,) = run_dirs(tmp_path / "experiments")
    assert run_dir.parent == tmp_path / "experiments" / "xor_relu" / "runs"
    assert {".hydra", "metrics.json", "checkpoint.pt", "train.log"} <= {p.name for p in run_dir.iterdir()}
    assert {"config.yaml", "overrides.yaml", "hydra.yaml"} <= {p.name for p in (run_dir / ".hydra").iterdir()}
    assert any(p.name.startswith("events.out.tfevents") for p in run_dir.iterdir())
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["status"] == "completed" and m["final"]["accuracy/train"] == 1.0
    assert m["overrides"] == ["+exp=xor_relu"]
    assert "completed" in out.stdout and "accuracy" in out.stdout
    pred = run_nnrun(["predict", str(run_dir), "1", "0"], tmp_path)
    assert pred.returncode == 0, pred.stderr
    assert "-> 1" in pred.stdout


def test_cfg_job_prints_the_composed_config(tmp_path, nnrun_here):
    code, out, err = nnrun_here(["train", "+exp=xor_relu", "--cfg", "job"])
    assert code == 0, err
    assert "exp_name: xor_relu" in out
    assert not (tmp_path / "experiments").exists()


@pytest.mark.parametrize("args,comp_line,printed", [
    (["train", "--cfg", "all", "--package", "hydra.run.dir"], "", "experiments/default/runs/"),
    (["train", "--cfg", "all", "-p", "hydra.run.dir", "--config-name", "train"], "", "experiments/default/runs/"),
    (["-sc", "query=bash"], "nnrun train hydra.run.dir=", "hydra.run.dir=experiments/default/runs/")])
def test_a_command_that_runs_nothing_names_a_run_dir_without_making_it(args, comp_line, printed, tmp_path,
                                                                       capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COMP_LINE", comp_line)
    code, out, err = run_main(args, capsys)
    assert code == 0 and out.startswith(printed), (out, err)
    assert not (tmp_path / "experiments").exists()


@pytest.mark.parametrize("args,said", [
    (["--cfg", "job", "-p", "trian"], "--package='trian' is not allowed: a key of the config --cfg job prints; "
                                      "did you mean 'train'?"),
    (["--cfg", "job", "-p", "hydra.run.dir"], "--package='hydra.run.dir' is not allowed: a key of the config "
                                              "--cfg job prints (Hydra's settings: --cfg hydra)"),
    (["--cfg", "hydra", "-p", "hydra.help"], "--package='hydra.help' is not allowed: a key of the config --cfg "
                                             "hydra prints; did you mean 'hydra.sweep'?"),
    (["--cfg", "job", "--package=train.batch_size"], "train.batch_size is null, which Hydra's --package prints as "
                                                     "not found; --cfg job --package train shows it"),
    (["--cfg", "hydra", "-p", "hydra.run.dir"], "--cfg hydra cannot print hydra.run.dir (Interpolation key 'exp_name'"
                                                " not found); --cfg hydra --package hydra.run shows it as set"),
    (["--cfg", "all", "-p", "hydra.job.num"], "--cfg all cannot print hydra.job.num (Missing mandatory value: "
                                              "hydra.job.num); --cfg all --package hydra.job shows it as set"),
    (["--cfg", "job", "-c", "all", "--resolve"], "--cfg is given twice, as job and all: give it once"),
    (["--cfg", "job", "--package", "seed", "-p", "trian"], "--package is given twice, as seed and trian: give it "
                                                           "once")])
def test_a_package_that_cfg_cannot_print_is_one_line_and_exit_2(args, said, tmp_path, capsys, monkeypatch):
    """Hydra's --package says 'not found' (exit 1) for a null or ??? value, and traces back for a dir's name that
    reads what the printed part leaves out."""
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(["train", *args], capsys)
    assert (code, out, err.splitlines()) == (2, "", [f"nnrun: error: {said}"])
    assert not (tmp_path / "experiments").exists()


@pytest.mark.parametrize("args,printed", [(["--cfg", "job", "-p", "seed"], "0\n"),
                                          (["--cfg", "hydra", "-p", "hydra.run"],
                                           "# @package hydra.run\ndir: ${nnrun_run_dir:${exp_name}}\n"),
                                          (["--cfg", "all", "-p", "_global_", "seed=3"], None),
                                          (["--help", "--cfg", "job", "-p", "trian"], "help")])
def test_a_package_cfg_can_print_is_printed(args, printed, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(["train", *args], capsys)
    assert code == 0, err
    if printed == "help":  # Hydra's --help goes before --cfg
        assert out.startswith("nnrun train: train one network")
    else:
        assert out == printed if printed is not None else (out.startswith("hydra:\n") and "\nseed: 3\n" in out)


def test_bad_value_is_one_line_and_exit_2(tmp_path, nnrun_here):
    code, _, err = nnrun_here(["train", "optimizer.lr=-1"])
    assert code == 2
    assert err.strip() == "nnrun: error: optimizer.lr=-1.0 is not allowed: a number > 0"
    assert not run_dirs(tmp_path)


def test_unknown_command_suggests_the_closest(nnrun_here):
    code, _, err = nnrun_here(["trian"])
    assert code == 2
    assert "did you mean 'train'" in err


def test_bash_completion_installs_and_completes_train_keys(nnrun_here, monkeypatch):
    code, out, err = nnrun_here(["-sc", "install=bash"])
    assert code == 0, err
    assert "hydra_bash_completion" in out
    monkeypatch.setenv("COMP_LINE", "nnrun train optimizer=ad")
    code, out, err = nnrun_here(["-sc", "query=bash"])
    assert code == 0, err
    assert "optimizer=adam" in out.split() and "optimizer=adagrad" in out.split()
    monkeypatch.setenv("COMP_LINE", "nnrun tr")
    assert nnrun_here(["-sc", "query=bash"])[1].split() == ["train"]


def test_multirun_names_job_dirs_from_overrides(tmp_path, nnrun_here):
    code, out, err = nnrun_here(["train", "-m", "optimizer.lr=0.01,0.1", "train.epochs=3"])
    assert code == 0, err
    jobs = run_dirs(tmp_path / "experiments" / "default" / "multirun")
    assert [j.name for j in jobs] == ["0_optimizer.lr=0.01,train.epochs=3", "1_optimizer.lr=0.1,train.epochs=3"]
    assert "completed" in out and "2 jobs" in out


def test_a_sweep_over_experiments_names_each_jobs_experiment(tmp_path, capsys, monkeypatch):
    """A sweep of one experiment is under experiments/<its exp_name>/, and its job dirs leave exp out; a sweep
    over +exp=a,b is one sweep (under experiments/default/), and each job dir says which experiment it ran."""
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(["train", "-m", "+exp=xor_relu,xor_perceptron", "train.epochs=2",
                               "hydra/job_logging=none"], capsys)
    assert code == 0, err
    assert [(d.parts[-4], d.name) for d in run_dirs(tmp_path / "experiments")] == [
        ("default", "0_exp=xor_relu,train.epochs=2"), ("default", "1_exp=xor_perceptron,train.epochs=2")]
    # Under an exp_name of their own, or in a sweep dir given on the command line, the jobs still say which.
    code, out, err = run_main(["train", "-m", "+exp=xor_relu,xor_perceptron", "train.epochs=2", "exp_name=both",
                               "hydra/job_logging=none"], capsys)
    assert code == 0, err
    assert [d.name for d in run_dirs(tmp_path / "experiments" / "both")] == [
        "0_exp=xor_relu,exp_name=both,train.epochs=2", "1_exp=xor_perceptron,exp_name=both,train.epochs=2"]
    code, out, err = run_main(["train", "-m", "+exp=xor_relu", "seed=0,1", "train.epochs=2", "hydra/job_logging=none",
                               f"hydra.sweep.dir={tmp_path / 'mine'}"], capsys)
    assert code == 0, err
    assert [d.name for d in run_dirs(tmp_path / "mine")] == ["0_exp=xor_relu,seed=0,train.epochs=2",
                                                              "1_exp=xor_relu,seed=1,train.epochs=2"]
    code, out, err = run_main(["train", "-m", "+exp=xor_relu,xor_sigmoid", "train.epochs=2", "hydra/job_logging=none",
                               "hydra.sweep.dir=experiments/xor_relu/../pair"], capsys)  # not xor_relu's: both say
    assert code == 0, err
    assert [d.name for d in run_dirs(tmp_path / "experiments" / "pair")] == [
        "0_exp=xor_relu,train.epochs=2", "1_exp=xor_sigmoid,train.epochs=2"]


def test_runs_and_sweeps_started_in_the_same_second_get_a_dir_each(tmp_path, monkeypatch, capsys):
    """Hydra names dirs by the second; nnrun adds _1, _2 ... where that name is taken: a second sweep of the same
    second is not written into the first one's dir, under either local launcher."""
    from datetime import datetime

    from nnrun import app

    class Frozen(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2026, 1, 2, 3, 4, 5)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(app, "datetime", Frozen)
    for launcher in ("basic", "vectorized"):
        assert run_main(["train", "train.epochs=2", "hydra/job_logging=none"], capsys)[0] == 0
        code, out, err = run_main(["train", "-m", f"hydra/launcher={launcher}", "seed=0,1", "train.epochs=2",
                                   "hydra/job_logging=none"], capsys)
        assert code == 0, err
    experiment = tmp_path / "experiments" / "default"
    stamps = ["2026-01-02_03-04-05", "2026-01-02_03-04-05_1"]
    assert sorted(p.name for p in (experiment / "runs").iterdir()) == stamps
    assert sorted(p.name for p in (experiment / "multirun").iterdir()) == stamps
    for sweep in (experiment / "multirun").iterdir():
        assert (sweep / "multirun.yaml").is_file()
        assert [d.name for d in run_dirs(sweep)] == ["0_seed=0,train.epochs=2", "1_seed=1,train.epochs=2"]
    assert f"sweep dir: experiments/default/multirun/{stamps[1]}" in out


def test_a_sweep_with_a_job_that_cannot_read_its_data_is_refused_before_any_job(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    good = tmp_path / "good.csv"
    good.write_text("a,b,y\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(40)))
    code, _, err = run_main(["train", "-m", "dataset=csv", "dataset.path=good.csv,missing.csv", "train.epochs=3"],
                            capsys)
    assert code == 2
    assert err.strip() == ("nnrun: error: job #1 (dataset=csv dataset.path=missing.csv train.epochs=3): "
                           "dataset.path=missing.csv: no such file")
    assert not (tmp_path / "experiments").exists()


def test_a_job_that_cannot_read_its_data_from_its_own_dir_fails_alone(tmp_path, nnrun_here):
    """With hydra.job.chdir a relative data path is read from the job's own dir, which does not exist before the
    job starts: such a job is checked as it starts, and fails alone."""
    good = tmp_path / "good.csv"
    good.write_text("a,b,y\n" + "".join(f"{i},{i % 3},{i % 2}\n" for i in range(40)))
    code, out, err = nnrun_here(["train", "-m", "dataset=csv", f"dataset.path={good},missing.csv", "train.epochs=3",
                                 "hydra.job.chdir=true"])
    assert code == 1, err  # a failed job is a fault: exit 1, after the summary
    assert "job 1 failed" in err and "no such file" in err
    statuses = sorted(json.loads(p.read_text())["status"] for p in (tmp_path / "experiments").rglob("metrics.json"))
    assert statuses == ["completed", "failed"]  # the job that never trained says so in its metrics.json
    assert summary_count(out, "failed") == 1 and summary_count(out, "completed") == 1


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


REFUSED_AT_START = {
    "device_cuda_without_cuda": (["device=cuda"], "device='cuda'"),
    "malformed_csv": (["dataset=csv", "dataset.path=bad.csv", "dataset.target=y"], "'x' is not a number"),
    "missing_csv": (["dataset=csv", "dataset.path=missing.csv", "dataset.target=y"], "no such file"),
    # Three classes in a CSV: known only once the file is read.
    "loss_that_does_not_fit_the_data": (["dataset=csv", "dataset.path=three.csv", "dataset.target=y", "loss=bce"],
                                        "loss='bce'"),
    "vectorized_launcher_without_m": (["hydra/launcher=vectorized"], "add -m"),
}


@pytest.mark.parametrize("name", list(REFUSED_AT_START))
def test_a_run_refused_at_start_leaves_no_run_dir_behind(name, tmp_path, nnrun_here):
    """Bad input found once Hydra made the run dir: exit 2 with one line, and no empty run dir (which `nnrun
    report` would list as unfinished), nor the runs/ and experiment dirs made for it."""
    overrides, fragment = REFUSED_AT_START[name]
    if name == "device_cuda_without_cuda" and _cuda_available():
        pytest.skip("CUDA is available here")
    (tmp_path / "bad.csv").write_text("a,b,y\n1,2,0\n3,x,1\n")
    (tmp_path / "three.csv").write_text("a,b,y\n" + "".join(f"{i},{i % 5},{i % 3}\n" for i in range(30)))
    code, _, err = nnrun_here(["train", "train.epochs=2", *overrides])
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("nnrun: error: ") and fragment in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.csv", "three.csv"]


def test_a_refused_run_removes_only_its_own_dir(tmp_path, nnrun_here, monkeypatch):
    """An earlier run and the experiment's runs/ stay; a dir the refused run did not leave empty stays too."""
    earlier = tmp_path / "experiments" / "default" / "runs" / "2026-01-01_00-00-00"
    earlier.mkdir(parents=True)
    (earlier / "metrics.json").write_text("{}")
    bad_csv = ["dataset=csv", "dataset.path=missing.csv", "dataset.target=y"]  # found once the run dir is made
    code, _, err = nnrun_here(["train", *bad_csv])
    assert code == 2, err
    assert run_dirs(tmp_path) == [] and [p.name for p in earlier.parent.iterdir()] == [earlier.name]

    # A run dir that holds more than what Hydra made for the run stays, with all it holds.
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    code, _, err = nnrun_here(["train", *bad_csv, f"hydra.run.dir={mine}"])
    assert code == 2, err
    assert (mine / "notes.txt").read_text() == "keep me" and (mine / ".hydra").is_dir()

    # A run dir named by a link: what the run left in it goes; the link and the dir it leads to stay.
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    code, _, err = nnrun_here(["train", *bad_csv, "hydra.run.dir=link"])
    assert (code, len(err.strip().splitlines())) == (2, 1), err
    assert (tmp_path / "link").is_symlink() and list((tmp_path / "real").iterdir()) == []

    # A dir the user named stays, emptied of what the run left: one made for it, or the working dir.
    (tmp_path / "out").mkdir()
    code, _, err = nnrun_here(["train", *bad_csv, "hydra.run.dir=out"])
    assert (code, len(err.strip().splitlines())) == (2, 1), err
    assert list((tmp_path / "out").iterdir()) == []
    for here in (tmp_path / "here", tmp_path / "experiments" / "xor" / "runs" / "mine"):  # in nnrun's layout too
        here.mkdir(parents=True)
        monkeypatch.chdir(here)
        code, _, err = nnrun_here(["train", *bad_csv, f"dataset.path={tmp_path / 'missing.csv'}", "hydra.run.dir=."])
        assert (code, len(err.strip().splitlines())) == (2, 1), err
        assert Path.cwd() == here and list(here.iterdir()) == []
    # Nor is a dir above the run dir, where that is the working dir.
    runs = tmp_path / "other" / "experiments" / "xor" / "runs"
    runs.mkdir(parents=True)
    monkeypatch.chdir(runs)
    code, _, err = nnrun_here(["train", *bad_csv, f"dataset.path={tmp_path / 'missing.csv'}", "hydra.run.dir=foo"])
    assert code == 2 and Path.cwd() == runs and list(runs.iterdir()) == []
    # A run that moves into its run dir (hydra.job.chdir) still leaves nothing behind.
    (tmp_path / "fresh").mkdir()
    monkeypatch.chdir(tmp_path / "fresh")
    code, _, err = nnrun_here(["train", *bad_csv, f"dataset.path={tmp_path / 'missing.csv'}", "hydra.job.chdir=true"])
    assert code == 2 and list((tmp_path / "fresh").iterdir()) == [], err


@pytest.mark.parametrize("command,where", [(["train", "+exp=xor_relu"], "nnrun.preflight.check"),
                                           (["predict", "run", "1", "0"], "nnrun.predict.main"),
                                           (["report", "."], "nnrun.report.main")])
def test_ctrl_c_before_a_run_handles_it_is_one_line_and_exit_130(command, where, monkeypatch, capsys):
    """While nnrun starts and checks a command line, or reports, or predicts: no traceback."""
    from nnrun import cli

    def pressed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(where, pressed)
    monkeypatch.setattr("sys.argv", ["nnrun", *command])
    with pytest.raises(SystemExit) as exited:
        cli.run()
    assert (exited.value.code, capsys.readouterr().err) == (130, "nnrun: interrupted\n")
