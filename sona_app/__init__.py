"""sona's application side: what the services, the bridge and the jobs share, outside the library.

The library (``sona``) reads no environment and has no command line; everything
that turns a deployment's configuration into running parts lives here:

- :mod:`sona_app.settings`: the environment, read and validated in this one place;
- :mod:`sona_app.bootstrap`: how every process gets its model, adapter store and
  users' state (the current published model, :class:`~sona_app.bootstrap.LiveEngine`);
- :mod:`sona_app.cli`: the library jobs (``sona db``, ``fit``, ``train-adapters``,
  ``evaluate``); ``serving.cli`` adds the commands that run services;
- :mod:`sona_app.adapter_run`, :mod:`sona_app.datasource`: the resumable adapter
  training run and where ``--data`` comes from.

Dependencies point inward: ``sona_app`` imports ``sona``, never the web or
messaging stacks, and ``sona`` never imports ``sona_app`` (import-linter checks
both). Only settings are imported here, so ``sona --help`` stays light.
"""

from sona_app.settings import Settings, load_settings

__all__ = ["Settings", "load_settings"]
