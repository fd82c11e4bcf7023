"""The insights processor: the event log projected into ClickHouse tables and metrics.

``rows`` decides which rows a delivery makes (pure); ``app`` is the Faust shell that
batches them into :class:`projections.sink.ClickHouseSink` and serves read-only SQL.
"""
