"""Events: interactions recorded while a model is served, kept for the next update.

:class:`EventLog` is the durable log the service appends to (``hybridrec serve --events
PATH``, ``POST /events``); :func:`read_events` reads the events after a model's watermark
(:func:`watermark_of`) as an interactions frame, for ``hybridrec update``.
"""

from hybridrec.events.log import Event, EventLog, EventLogBusy, EventLogUnavailable
from hybridrec.events.read import read_events, read_rows, watermark_of

__all__ = [
    "Event",
    "EventLog",
    "EventLogBusy",
    "EventLogUnavailable",
    "read_events",
    "read_rows",
    "watermark_of",
]
