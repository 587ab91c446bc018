"""ASHA that does not let an unstable trial set the bar: now the ``asha`` plug-in of
:mod:`sslray.search.schedulers` (kept here for code that imports it by this name)."""
from sslray.search.schedulers.asha import SoundASHA

__all__ = ["SoundASHA"]
