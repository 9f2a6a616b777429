"""The built-ins' torch modules, imported only when a model is built or trained: the plugin
classes (and so `infoflow plugins list`) import no torch."""
