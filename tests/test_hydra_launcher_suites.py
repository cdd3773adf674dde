"""Hydra's own conformance suites for launchers and batched sweepers, run on `hydra/launcher=vectorized` and on
nnrun's sweeper (`hydra/sweeper=nnrun`, under the basic and the vectorized launcher): with a task that is not
nnrun's, the launcher runs job by job as Hydra's basic launcher does, and the sweeper gives what Hydra's basic
sweeper gives. (Their fixtures come with hydra-core's pytest plugin.)"""

from __future__ import annotations

import pytest
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.test_utils.launcher_common_tests import BatchedSweeperTestSuite, IntegrationTestSuite, LauncherTestSuite


from hydra_plugins.nnrun.sweeper import NnrunSweeper
from hydra_plugins.nnrun.vectorized_launcher import VectorizedLauncher


@pytest.fixture(autouse=True)
def _hydras_default_version_base():
    """The suites expect an app without version_base (Hydra 1.1's defaults: the job runs in its output dir).
    Any test in this process that imported nnrun.app set the base to 1.3 (its @hydra.main does): set it back."""
    from hydra import version

    before = version.getbase()
    version.setbase("1.1")
    yield
    if isinstance(before, type(version.getbase())):
        version.VersionBase.instance().setbase(before)


def test_the_launcher_and_the_sweeper_are_discovered_as_hydra_plugins():
    assert VectorizedLauncher.__name__ in [x.__name__ for x in Plugins.instance().discover(Launcher)]
    assert NnrunSweeper.__name__ in [x.__name__ for x in Plugins.instance().discover(Sweeper)]


NNRUN_SWEEPER = ["hydra/sweeper=nnrun"]


@pytest.mark.parametrize("launcher_name, overrides", [("vectorized", []), ("basic", NNRUN_SWEEPER),
                                                      ("vectorized", NNRUN_SWEEPER)])
class TestVectorizedLauncherAndNnrunSweeper(LauncherTestSuite):
    pass


@pytest.mark.parametrize("launcher_name, overrides", [("basic", [*NNRUN_SWEEPER, "hydra.sweeper.max_batch_size=2"]),
                                                      ("vectorized", [*NNRUN_SWEEPER, "hydra.sweeper.max_batch_size=2"])])
class TestNnrunSweeperInBatches(BatchedSweeperTestSuite):
    pass


def _integration(launcher: str, sweeper: str) -> dict:
    return {"defaults": [{"override hydra/launcher": launcher}, {"override hydra/sweeper": sweeper},
                         {"override hydra/hydra_logging": "hydra_debug"}, {"override hydra/job_logging": "disabled"}]}


@pytest.mark.slow
@pytest.mark.parametrize("task_launcher_cfg, extra_flags", [(_integration("vectorized", "basic"), ["-m"]),
                                                            (_integration("basic", "nnrun"), ["-m"]),
                                                            (_integration("vectorized", "nnrun"), ["-m"])])
class TestIntegration(IntegrationTestSuite):
    pass
