"""The triggers processor: GitHub events and ChatOps commands start workflow runs.

``rules`` reads the trigger file, ``matcher`` decides (pure), ``http_dispatch`` delivers
to HTTP targets, ``app`` is the Faust shell that connects them to Kafka.
"""
