"""The tests. Set before anything imports the task registry, so the server and its workers
load the test-only kinds too."""

import os

os.environ["TASKSTREAM_EXTRA_KINDS"] = "tests.kinds_for_tests"
