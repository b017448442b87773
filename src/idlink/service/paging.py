"""Paging of list calls (AIP-158): the page size, and page tokens bound to their request.

A page token is opaque to the caller: base64url of a version byte, eight
bytes that bind it to the request it continues, and the position after which
the next page starts. The binding is a digest of the list's name and of the
request fields that choose what is listed (the account, the customer, the
filters; not the page size, which may change from page to page). So a token
is refused (``INVALID_ARGUMENT``, field ``page_token``) when it was not given
by this service, and when it is given with another request: a history token
of customer A does not page the history of customer B (reason
``PAGE_TOKEN_MISMATCH``).

Every list does the same three steps::

    page = paging.page_request("history", request, default=50, maximum=500,
                               bound_to=(account, pid))
    found = ...  # at most page.size + 1 items after page.after, in list order
    items, response.next_page_token = paging.paged(found, page, position_of)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from idlink.errors import InvalidArgument

T = TypeVar("T")

TOKEN_VERSION = 1
_BINDING_BYTES = 8
MISMATCH = "PAGE_TOKEN_MISMATCH"


def page_size(requested: int, default: int, maximum: int, field: str = "page_size") -> int:
    """The page size a request asks for: ``default`` for 0, at most ``maximum``."""
    if requested < 0:
        raise InvalidArgument(f"{field} must not be negative", field=field)
    return min(requested or default, maximum)


def _binding(list_name: str, bound_to: Iterable[object]) -> bytes:
    digest = hashlib.blake2b(digest_size=_BINDING_BYTES, person=b"idlink-page")
    for part in (list_name, *bound_to):
        data = part if isinstance(part, bytes) else str(part).encode()
        digest.update(len(data).to_bytes(4, "big"))
        digest.update(data)
    return digest.digest()


@dataclass(frozen=True, slots=True)
class PageRequest:
    """One page asked for: how many items, after which position (b"": from the start)."""

    list_name: str
    size: int
    after: bytes
    binding: bytes
    field: str = "page_token"

    def token(self, position: bytes) -> str:
        """The token of the page that starts after ``position``, bound like this request."""
        raw = bytes([TOKEN_VERSION]) + self.binding + position
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def page_request(
    list_name: str,
    request: Any,
    *,
    default: int,
    maximum: int,
    bound_to: Iterable[object] = (),
    position_bytes: int | None = None,
    field: str = "page_token",
) -> PageRequest:
    """The page a list request asks for (INVALID_ARGUMENT for a token it may not use).

    ``bound_to`` are the values of the request that choose what is listed;
    ``position_bytes`` is the length of a position when the list has one length.
    """
    size = page_size(request.page_size, default, maximum)
    binding = _binding(list_name, bound_to)
    return PageRequest(
        list_name, size, _position(request.page_token, binding, position_bytes, field), binding
    )


def _position(token: str, binding: bytes, position_bytes: int | None, field: str) -> bytes:
    if not token:
        return b""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    head, bound, position = raw[:1], raw[1 : 1 + _BINDING_BYTES], raw[1 + _BINDING_BYTES :]
    if head != bytes([TOKEN_VERSION]) or len(bound) != _BINDING_BYTES or not position:
        raise InvalidArgument(f"{field} is not a token this service gave", field=field)
    if bound != binding:
        raise InvalidArgument(
            f"{field} was given for another request (another account, customer, list or"
            " filter); send the same request as for the first page, or start again without a"
            " token",
            reason=MISMATCH,
            field=field,
        )
    if position_bytes is not None and len(position) != position_bytes:
        raise InvalidArgument(f"{field} is not a token this service gave", field=field)
    return position


def paged(
    found: Sequence[T], page: PageRequest, position: Callable[[T], bytes]
) -> tuple[list[T], str]:
    """The items of the page and the next page's token ("" on the last page).

    ``found`` holds the items after ``page.after`` in list order, at least
    ``page.size + 1`` of them when there are that many (one more than the page
    tells that a next page exists).
    """
    items = list(found[: page.size])
    if len(found) > page.size and items:
        return items, page.token(position(items[-1]))
    return items, ""
