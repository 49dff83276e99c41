"""The feeds, and the ``[feed]`` config section that chooses one by its ``kind``.

Each feed module holds its feed and its config class, which takes only that feed's
options; ``FeedConfig`` is their union, so a misspelt option, or one another feed takes,
is refused with the field named. A section without ``kind`` is the synthetic feed.

Usage::

    feed = config.feed.build(run_date)  # the one way to make a feed
"""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import Discriminator, Tag

from quantrec.feeds.base import BaseFeedConfig
from quantrec.feeds.criteo import CriteoFeedConfig
from quantrec.feeds.movielens import MovieLensFeedConfig
from quantrec.feeds.synthetic import SyntheticFeedConfig
from quantrec.feeds.table import TableFeedConfig

DEFAULT_KIND = "synthetic"
# A new feed is one more class here; its kind is the default of its ``kind`` field.
FEED_CONFIGS: dict[str, type[BaseFeedConfig]] = {
    config.model_fields["kind"].default: config
    for config in (SyntheticFeedConfig, MovieLensFeedConfig, CriteoFeedConfig, TableFeedConfig)
}
FEED_KINDS: tuple[str, ...] = tuple(FEED_CONFIGS)


def _kind(section: Any) -> str | None:
    """The tag of a ``[feed]`` section: its ``kind``, the default one when it has none."""
    if isinstance(section, dict):
        return section.get("kind", DEFAULT_KIND)
    return getattr(section, "kind", None)


# The union of the config classes, each tagged with its kind. The discriminator is a
# function rather than the field name so that a section may leave ``kind`` out. Union[...]
# because the members come from the registry; ``X | Y`` would need them spelt out again.
FeedConfig = Annotated[
    Union[tuple(Annotated[config, Tag(kind)] for kind, config in FEED_CONFIGS.items())],  # noqa: UP007
    Discriminator(_kind),
]

__all__ = [
    "DEFAULT_KIND",
    "FEED_CONFIGS",
    "FEED_KINDS",
    "BaseFeedConfig",
    "CriteoFeedConfig",
    "FeedConfig",
    "MovieLensFeedConfig",
    "SyntheticFeedConfig",
    "TableFeedConfig",
]
