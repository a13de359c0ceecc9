"""python -m lab [flags]: a run of the lab's command line (lab/run.py)."""
from lab.run import main

main()
