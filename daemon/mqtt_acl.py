"""Does a ``topic_prefix`` fit the shipped Mosquitto ACL (``deploy/mosquitto/acl``)?

The broker drops a publish the ACL does not allow without telling the client (MQTT
3.1.1 has no negative PUBACK), so a prefix the ACL cannot match loses every alert in
silence. The daemon's rules are copied here (a test keeps them equal to the file) and
checked at start-up, which then warns naming the prefix and the ACL pattern.
"""

from __future__ import annotations

from typing import Final, Literal

__all__ = ["SHIPPED_ACL_DAEMON_RULES", "acl_mismatch", "topic_matches"]

Access = Literal["read", "write"]

SHIPPED_ACL_DAEMON_RULES: Final[tuple[tuple[Access, str], ...]] = (
    ("write", "cellguard/+/alerts/#"),
    ("write", "cellguard/+/status/#"),
    ("write", "cellguard/+/daemon"),
    ("write", "cellguard/+/command_result/#"),
    ("read", "cellguard/+/command/#"),
)
"""The ``user cellguard`` section of ``deploy/mosquitto/acl``: (access, pattern)."""


def topic_matches(pattern: str, topic: str) -> bool:
    """Whether the MQTT filter ``pattern`` (with ``+`` and ``#``) matches ``topic``."""
    want = pattern.split("/")
    have = topic.split("/")
    for index, level in enumerate(want):
        if level == "#":
            return True  # also matches the parent level itself, as in MQTT
        if index >= len(have) or (level != "+" and level != have[index]):
            return False
    return len(want) == len(have)


def acl_mismatch(
    prefix: str, rules: tuple[tuple[Access, str], ...] = SHIPPED_ACL_DAEMON_RULES
) -> str | None:
    """Why the daemon's topics under ``prefix`` break ``rules``, or None if they fit.

    Tried with one concrete instrument and channel: the ACL patterns use ``+`` and
    ``#`` only, so one example per kind of topic stands for all of them.
    """
    needed: tuple[tuple[Access, str], ...] = (
        ("write", f"{prefix}/alerts/i/c"),
        ("write", f"{prefix}/status/i/c"),
        ("write", f"{prefix}/daemon"),
        ("write", f"{prefix}/command_result/i/c"),
        ("read", f"{prefix}/command/i/c"),
    )
    for access, topic in needed:
        patterns = [p for a, p in rules if a == access]
        if not any(topic_matches(p, topic) for p in patterns):
            kind = topic[len(prefix) + 1 :].split("/")[0]
            # Name the pattern meant for this kind of topic, not the whole list.
            meant = [p for p in patterns if f"/{kind}" in p] or patterns
            shown = " or ".join(repr(p) for p in meant)
            return (
                f"topic_prefix {prefix!r} does not fit the shipped Mosquitto ACL "
                f"(deploy/mosquitto/acl): {access} access to {topic!r} needs pattern {shown}, "
                "so the broker would drop those messages without an error; use a prefix "
                'of the form "cellguard/<lab-or-pc>" or extend the ACL'
            )
    return None
