"""The pieces of the ``flowkit`` command: reading its inputs, running a task, showing it.

:mod:`flowkit.cli` only parses arguments and wires these together.
"""
