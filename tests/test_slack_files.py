"""File uploads (the digest chart): ``SlackTransport.upload_file`` through a real
``slack_sdk.WebClient.files_upload_v2`` against the fake Slack Web API
(files.getUploadURLExternal → POST of the bytes → files.completeUploadExternal)."""

from __future__ import annotations

import asyncio
import struct
import zlib
from collections.abc import Iterator

import pytest

from bot.transports.base import PermanentSendError, RateLimited, TransientSendError
from bot.transports.slack import SlackTransport, make_web_client
from tests.fakes.slack_api import FakeSlackAPI, RateLimit

USER = "UREP0001"
DM = "DREP0001"  # the fake's DM with USER


def tiny_png(width: int = 3, height: int = 2) -> bytes:
    """A valid RGB PNG (signature, IHDR, IDAT, IEND with CRCs) built with zlib and struct."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    # Each scanline: filter type 0, then one RGB triple a pixel.
    rows = b"".join(
        b"\x00" + b"".join(bytes((x * 80 % 256, y * 120 % 256, 200)) for x in range(width))
        for y in range(height)
    )
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


@pytest.fixture
def slack() -> Iterator[FakeSlackAPI]:
    with FakeSlackAPI(users={USER, "UREP0002"}) as api:
        yield api


def transport_for(slack: FakeSlackAPI, token: str | None = None) -> SlackTransport:
    return SlackTransport(make_web_client(token or slack.token, slack.url))


def upload(transport: SlackTransport, target: object, data: bytes, **kw: str) -> dict:
    return asyncio.run(
        transport.upload_file(
            target,  # type: ignore[arg-type]
            filename=kw.get("filename", "digest.png"),
            content=data,
            title=kw.get("title", "Receivables by tier"),
            initial_comment=kw.get("initial_comment"),
        )
    )


def test_tiny_png_is_a_valid_png() -> None:
    png = tiny_png()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    # Walk the chunks and check every CRC; the image data inflates to height rows.
    pos, kinds = 8, []
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, data = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", png[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + data) & 0xFFFFFFFF == crc
        kinds.append(kind)
        if kind == b"IDAT":
            assert len(zlib.decompress(data)) == 2 * (1 + 3 * 3)
        pos += 12 + length
    assert kinds == [b"IHDR", b"IDAT", b"IEND"]


def test_png_to_a_users_dm_arrives_byte_identical(slack: FakeSlackAPI) -> None:
    png = tiny_png()
    out = upload(
        transport_for(slack), USER, png, title="Receivables by tier",
        initial_comment="Today's digest chart",
    )  # fmt: skip

    assert out["channel"] == DM
    stored = slack.files[out["file_id"]]
    assert stored.data == png
    assert stored.filename == "digest.png"
    assert stored.title == "Receivables by tier"
    assert stored.initial_comment == "Today's digest chart"
    assert stored.channels == [DM]
    assert out["permalink"].endswith(f"/{out['file_id']}/digest.png")
    # The three steps, in order; completeUploadExternal got the DM, never the user id.
    steps = [
        r.method
        for r in slack.requests
        if r.method in {"conversations.open", "files.getUploadURLExternal", "upload",
                        "files.completeUploadExternal"}
    ]  # fmt: skip
    assert steps == [
        "conversations.open",
        "files.getUploadURLExternal",
        "upload",
        "files.completeUploadExternal",
    ]
    (url_call,) = slack.calls("files.getUploadURLExternal")
    assert int(url_call.params["length"]) == len(png)
    (complete,) = slack.calls("files.completeUploadExternal")
    assert complete.params["channel_id"] == DM


def test_upload_to_a_sent_messages_ref_and_to_a_channel(slack: FakeSlackAPI) -> None:
    transport = transport_for(slack)
    sent = transport.client.chat_postMessage(channel=USER, text="digest")
    ref = {"channel": sent["channel"], "ts": sent["ts"]}
    out = upload(transport, ref, b"chart-bytes", filename="chart.png")
    assert out["channel"] == DM
    assert slack.files[out["file_id"]].data == b"chart-bytes"
    assert slack.files[out["file_id"]].initial_comment is None
    assert not slack.calls("conversations.open")  # a D… id is used as it is

    slack.add_channel("CCREDIT01")
    out = upload(transport, "CCREDIT01", b"x" * 70_000, filename="big.png")
    assert slack.files[out["file_id"]].channels == ["CCREDIT01"]
    assert slack.files[out["file_id"]].data == b"x" * 70_000


def test_429_on_get_upload_url_is_rate_limited_with_retry_after(slack: FakeSlackAPI) -> None:
    slack.script("files.getUploadURLExternal", RateLimit(17))
    transport = transport_for(slack)
    with pytest.raises(RateLimited) as info:
        upload(transport, USER, tiny_png())
    assert info.value.retry_after == 17
    assert not slack.calls("upload") and not slack.calls("files.completeUploadExternal")
    assert not slack.files

    # The script is spent: the next try goes through.
    out = upload(transport, USER, tiny_png())
    assert slack.files[out["file_id"]].data == tiny_png()


def test_unknown_channel_is_permanent(slack: FakeSlackAPI) -> None:
    transport = transport_for(slack)
    with pytest.raises(PermanentSendError) as info:
        upload(transport, "CNOSUCH01", tiny_png())
    assert "channel_not_found" in str(info.value)
    assert info.value.unreachable
    # Uploaded but never shared: nothing is in any channel.
    assert all(not f.channels for f in slack.files.values())

    with pytest.raises(PermanentSendError) as info:
        upload(transport, "UNOBODY01", tiny_png())  # not a user the fake knows
    assert "user_not_found" in str(info.value)
    assert info.value.unreachable


def test_other_errors(slack: FakeSlackAPI) -> None:
    with pytest.raises(PermanentSendError) as info:
        upload(transport_for(slack, "xoxb-wrong"), USER, tiny_png())
    assert "invalid_auth" in str(info.value) and not info.value.unreachable

    transport = transport_for(slack)
    slack.script("files.completeUploadExternal", 500)
    with pytest.raises(TransientSendError):
        upload(transport, DM, tiny_png())
    slack.add_channel("CCREDIT01")
    slack.script("CCREDIT01", "ratelimited")
    with pytest.raises(RateLimited):
        upload(transport, "CCREDIT01", tiny_png())
    with pytest.raises(PermanentSendError):
        upload(transport, "", tiny_png())


@pytest.mark.parametrize("status", [503, 201])
def test_a_failed_post_of_the_bytes_is_transient_and_shares_nothing(
    slack: FakeSlackAPI, status: int
) -> None:
    # 503: urllib raises HTTPError; 201: slack_sdk raises SlackRequestError (not 200)
    slack.script("upload", status)
    transport = transport_for(slack)
    with pytest.raises(TransientSendError):
        upload(transport, USER, tiny_png())
    assert not slack.calls("files.completeUploadExternal")
    assert all(f.data is None and not f.channels for f in slack.files.values())
    out = upload(transport, USER, tiny_png())  # the next try goes through
    assert slack.files[out["file_id"]].data == tiny_png()
