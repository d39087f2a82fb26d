"""``python -m ablate.table``: the table command (:mod:`ablate.report.table`), kept at this name because the README,
the experiments' commands and users' scripts call it so."""

from ablate.report.table import main

if __name__ == "__main__":
    main()
