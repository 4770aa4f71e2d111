"""Alarm reactions: what a rule does when its events are raised or cleared.

The outbox is filled by a trigger in the transaction of the raise or clear (migration
0075); :mod:`.worker` runs it (commands through the CommandService path with the rule
owner's permissions, :mod:`.owner`; signed webhooks, :mod:`.signing`, :mod:`.targets`;
e-mails, :mod:`.mail`), :mod:`.process` is `lifebox reactions`.
"""
