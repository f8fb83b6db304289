"""The event bus: topology, the outbox and its relay, stream and work-queue consumers, one ack policy."""

from shared.bus.messages import publish_event
from shared.bus.outbox import OutboxRelay, append_events
from shared.bus.publisher import ConfirmedPublisher
from shared.bus.stream_consumer import Batched, StreamConsumer
from shared.bus.topology import Topology, WorkQueue
from shared.bus.work_consumer import AlreadyHandled, BatchedWork, DoneOnce, Once, WorkQueueConsumer

__all__ = [
    "AlreadyHandled", "Batched", "BatchedWork", "ConfirmedPublisher", "DoneOnce", "Once", "OutboxRelay",
    "StreamConsumer", "Topology", "WorkQueue", "WorkQueueConsumer", "append_events", "publish_event",
]
