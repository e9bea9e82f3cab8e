"""poncho_wq/tools.py: run_group's supervisor reports the tool's own end (exit code, or the signal it died of)."""

import pytest

from poncho_wq.errors import Interrupted
from poncho_wq.tools import check_interrupted, run_group


@pytest.mark.parametrize("script, code", [("exit 3", 3), ("kill -TERM $$", -15), ("kill -KILL $$", -9)])
def test_run_group_reports_the_tools_exit_or_signal(script, code):
    # A tool killed by SIGKILL (the OOM killer) made the supervisor fail to reset a SIGKILL handler: exit 1 and a
    # Python traceback in the tool's output, which a BuildError then showed as the tool's message.
    r = run_group(["sh", "-c", "echo out; " + script])
    assert r.returncode == code and r.stdout == "out\n", r


def test_a_tool_stopped_by_sigterm_is_our_interruption():
    with pytest.raises(Interrupted):
        check_interrupted(run_group(["sh", "-c", "kill -TERM $$"]).returncode)
