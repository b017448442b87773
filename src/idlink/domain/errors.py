"""Moved to :mod:`idlink.errors`; kept while callers move over."""

from idlink.errors import *  # noqa: F403
