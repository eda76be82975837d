"""pytest glue of the fault suite: a `lab` fixture (the processes of one test,
all stopped at its end) and the summary lines repeated at the end of the run,
so the counts show even without -s."""
import pytest

import faults


@pytest.fixture
def lab(tmp_path):
    lab = faults.Lab(tmp_path)
    yield lab
    lab.close()


def pytest_terminal_summary(terminalreporter):
    if faults.SUMMARIES:
        terminalreporter.section("fault counts")
        for line in faults.SUMMARIES:
            terminalreporter.write_line(line)
