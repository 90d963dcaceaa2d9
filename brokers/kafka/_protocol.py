"""Kafka's DeleteGroups request, which aiokafka lacks, and what its answers mean.

The request and response are version 2 (flexible), sent through aiokafka's
admin client by :meth:`KafkaAdapter.forget_group
<brokers.kafka._adapter.KafkaAdapter.forget_group>`; :data:`ASK_AGAIN` lists the
answers after which it asks again shortly (a group not empty yet, or a
coordinator not ready).
"""

from __future__ import annotations

from aiokafka import errors as kafka_errors
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    CompactArray,
    CompactString,
    Int16,
    Int32,
    Schema,
    TaggedFields,
)

#: Kafka's error codes for a group that does not exist and for one that still has members.
GROUP_ID_NOT_FOUND, NON_EMPTY_GROUP = 69, 68
#: The answer to a LeaveGroup for a member the group no longer has.
UNKNOWN_MEMBER_ID = kafka_errors.UnknownMemberIdError.errno
# A just-started broker has no group coordinator until it has made its offsets
# topic, and a coordinator may be loading or moving: each passes, so ask again.
COORDINATOR_NOT_READY = (
    kafka_errors.GroupLoadInProgressError,
    kafka_errors.GroupCoordinatorNotAvailableError,
    kafka_errors.NotCoordinatorForGroupError,
)
#: Answers to a group deletion that mean "ask again shortly".
ASK_AGAIN = (NON_EMPTY_GROUP, *(error.errno for error in COORDINATOR_NOT_READY))


class _DeleteGroupsResponseV2(Response):  # type: ignore[misc]
    API_KEY = 42
    API_VERSION = 2
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "results",
            CompactArray(
                ("group_id", CompactString("utf-8")), ("error_code", Int16), ("tags", TaggedFields)
            ),
        ),
        ("tags", TaggedFields),
    )


class _DeleteGroupsRequestV2(RequestStruct):  # type: ignore[misc]
    FLEXIBLE_VERSION = True
    API_KEY = 42
    API_VERSION = 2
    RESPONSE_TYPE = _DeleteGroupsResponseV2
    SCHEMA = Schema(("groups_names", CompactArray(CompactString("utf-8"))), ("tags", TaggedFields))


class DeleteGroups(Request[_DeleteGroupsRequestV2]):  # type: ignore[misc]
    API_KEY = 42

    def __init__(self, groups: list[str]) -> None:
        self.groups = groups

    def build(self, request_struct_class: type[_DeleteGroupsRequestV2]) -> _DeleteGroupsRequestV2:
        return request_struct_class(groups_names=self.groups, tags={})
