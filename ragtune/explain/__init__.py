"""Explanations of single predictions: token attributions (integrated gradients, with Captum), the
leave-one-out influence of retrieved passages, and their HTML and PNG renderings.

See :mod:`ragtune.explain.attributions` for what the numbers mean.
"""

from ragtune.explain.attributions import embedding_layer, explain
from ragtune.explain.render import to_html, to_png

__all__ = ["embedding_layer", "explain", "to_html", "to_png"]
