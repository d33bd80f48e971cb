"""The command line, ``python -m minivar <command>`` or ``minivar <command>`` (``main.py``), and what
its verbs do with run folders (``runs.py``): the only code that parses arguments."""
