"""driftloop's tasks: pure logic and the Prefect tasks around it.

Set here, before any module loads scikit-learn's OpenMP runtime (which reads it once): waiting
OpenMP threads sleep instead of spinning, so a fit that shares its cores with another busy process
does not stall (tasks/threads.py says how many threads each fit uses). A value the user set wins.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
