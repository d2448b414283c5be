"""Alert episodes per source: from a stream of anomalous beats to one alert a person can act on.

An episode of a source (the record key) opens when at least ``k`` of its last ``n`` scored beats are
anomalous, is updated at most every ``--episode-update-interval`` of beat time, and closes after
``m`` consecutive normal beats or when the source has been silent for ``--episode-silence`` of its
partition's beat time. Each transition is one record on the alerts topic.

* :mod:`.rules` — the settings of the rule;
* :mod:`.state` — one source's state and its changelog encoding (bounded: at most ``k - 1`` pending
  anomalous beats, then a fixed-size open episode);
* :mod:`.alerts` — the alert documents (deterministic: no wall-clock field);
* :mod:`.store` — every source of the assigned partitions, stepped with each scored batch in input
  order, and what each batch changed;
* :mod:`.changelog` — the compacted changelog topic (co-partitioned with the input): the records a
  checkpoint writes, the topic's creation and checks, and the restore on assignment.

Why the state stays correct through crashes and rebalances is written down in :mod:`.store` (the
``through`` offsets) and :mod:`.changelog` (the order of a checkpoint's records).
"""
