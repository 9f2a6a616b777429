"""The built-in infoflow experiments. Each is registered under the ``infoflow.plugins``
entry-point group and uses only the public API of ``infoflow_track``."""
