"""Hydra's own conformance suites for launchers, run on `hydra/launcher=vectorized`: with a task that is not
nnrun's, the launcher runs job by job as Hydra's basic launcher does. (Their fixtures come with hydra-core's
pytest plugin.)"""

from __future__ import annotations

import pytest
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.test_utils.launcher_common_tests import IntegrationTestSuite, LauncherTestSuite


from hydra_plugins.nnrun_vectorized_launcher.vectorized_launcher import VectorizedLauncher


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


def test_the_launcher_is_discovered_as_a_hydra_plugin():
    assert VectorizedLauncher.__name__ in [x.__name__ for x in Plugins.instance().discover(Launcher)]


@pytest.mark.parametrize("launcher_name, overrides", [("vectorized", [])])
class TestVectorizedLauncher(LauncherTestSuite):
    pass


@pytest.mark.slow
@pytest.mark.parametrize("task_launcher_cfg, extra_flags", [
    ({"defaults": [{"override hydra/launcher": "vectorized"}, {"override hydra/hydra_logging": "hydra_debug"},
                   {"override hydra/job_logging": "disabled"}]}, ["-m"])])
class TestVectorizedLauncherIntegration(IntegrationTestSuite):
    pass
