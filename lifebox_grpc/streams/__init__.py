"""The live-stream engine every server stream uses (issue 21).

Per ``serve`` process there is one LISTEN connection (:mod:`.listener`) for every channel
streams follow (telemetry commits, presence changes, command updates, alarm changes). A
notice goes to the subscriptions (:mod:`.subscription`) that want it, each a bounded
queue: a stream that falls more than its buffer behind ends with RESOURCE_EXHAUSTED
(counted, :mod:`.metrics`) instead of holding memory or slowing the others. Telemetry
commits are read once per process for all the streams that follow their device
(:mod:`.telemetry`) and the rows fanned out in memory.
"""
