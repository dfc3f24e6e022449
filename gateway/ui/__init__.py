"""The live page of a cluster (``GET /ui``): the page itself (:mod:`gateway.ui.page`, plain
text that the broker's metrics port serves too) and the gateway's handlers
(:mod:`gateway.ui.handlers`). Nothing is imported here, so that the broker can take the page
without loading tornado."""
